"""NRU and NMRU: Mistry, Farrahi & Hare, "Learning Division with Neural Arithmetic Logic Modules", arXiv 2110.05177.

What is taken from where: the equations from the paper; the smooth |W| ≈ tanh(1000 W)² used in training only,
the NMRU's ε (float32 machine epsilon, training only), the initialisations and the regularisers from the
authors' code (github.com/bmistry4/nalm-robust-nmu, ``stable_nalu/functional/mnac.py`` mode "div",
``layer/reciprocal_nmu.py``, ``layer/concat_reciprocal_nmu*.py``; regulariser shape "linear", their default).
Training aids are the trainer's. The paper's runs (github.com/bmistry4/nalm-division,
``lfs_batch_jobs/single_layer_task/neurips_2021/sltr-in2.sh`` and ``sltr-in10.sh``): the NMRU with sign retrieval,
Adam lr 10⁻², gradient norm clipped to 1 (``TrainConfig(grad_clip=1.0)``, per seed); the NRU without clipping,
lr 1 (two inputs) or 10⁻³ (ten); both with their regulariser at λ 10 ramped over 20,000–35,000 of 50,000 steps
(two inputs) or 50,000–75,000 of 100,000 (ten).
"""

from __future__ import annotations

import torch
from torch import Tensor

from nalm import functional as F

from ._registry import register_unit
from .base import ArithmeticUnit, Generators, check_choice, check_positive
from .madsen import NAU

#: The NMRU's ε in 1 / (x + ε) during training: float32's machine epsilon, as in the authors' code.
FLOAT32_EPS = float(torch.finfo(torch.float32).eps)


@register_unit("nru")
class NRU(NAU):
    """Neural Reciprocal Unit (Mistry et al. 2021): y_j = ∏_i (sign(x_i) |x_i|^W_ji |W_ji| + 1 − |W_ji|),
    W clamped to [−1, 1].

    W_ji = 1 multiplies by x_i, −1 divides by it, 0 leaves it out. In training mode |W| is the authors' smooth
    tanh(k W)² (``sharpness`` k = 1000), in eval mode the exact |W|. Init and regulariser as the NAU's (the authors
    reuse them): W ~ U[−r, r], r = min(0.5, √(6 / (in + out))); R = mean(min(|W|, 1 − |W|)). An input of 0 is
    defined only where its weight is ≥ 0 (0^W with W < 0 is infinite).
    """

    options = ("sharpness",)
    multiplicative = True

    def __init__(self, in_features: int, out_features: int, *, num_seeds: int | None = None,
                 device=None, dtype=None, sharpness: float = 1000.0) -> None:
        super().__init__(in_features, out_features, num_seeds=num_seeds, device=device, dtype=dtype)
        self.sharpness = check_positive("nru", "sharpness", sharpness)

    def _forward(self, x: Tensor) -> Tensor:
        return F.nru(x, self.weight, self.sharpness if self.training else None)


@register_unit("nmru")
class NMRU(ArithmeticUnit):
    """Neural Multiplication-Reciprocal Unit (Mistry et al. 2021): an NMU over [x, 1 / (x + ε)], W ∈ [0, 1].

    y_j = ∏_k (W_jk x̃_k + 1 − W_jk), x̃ = [x, 1 / (x + ε)], W = [W_x | W_r] (out, 2·in) clamped to [0, 1];

    W_x and W_r are held as two (out, in) parameters. ε = float32's machine epsilon in training mode, 0 in eval
    mode (the authors'). Init W ~ U[0.25, 0.75] and the NMU's regulariser R = mean(min(W, 1 − W)).
    ``sign_retrieval`` (the authors' "NMRU with sign retrieval"): the NMU sees |x̃| and the sign is restored as
    cos(π k Wᵀ), k_i = 1 where x̃_i < 0, as in the RealNPU. Divides and multiplies, negative inputs included;
    in eval mode an input of 0 makes its reciprocal infinite and the output undefined (NaN), as in their code.
    """

    options = ("sign_retrieval",)
    multiplicative = True

    def __init__(self, in_features: int, out_features: int, *, num_seeds: int | None = None,
                 device=None, dtype=None, sign_retrieval: bool = False) -> None:
        super().__init__(in_features, out_features, num_seeds=num_seeds, device=device, dtype=dtype)
        self.sign_retrieval = bool(check_choice("nmru", "sign_retrieval", sign_retrieval, (True, False)))
        self.weight_x = self._parameter(out_features, in_features)
        self.weight_r = self._parameter(out_features, in_features)
        self.reset_parameters()

    def reset_parameters(self, generator: Generators = None) -> None:
        self._uniform(self.weight_x, 0.25, 0.75, generator)
        self._uniform(self.weight_r, 0.25, 0.75, generator)

    @property
    def weight(self) -> Tensor:
        """W = [W_x | W_r], shape (*S, out, 2·in): the weights of x and of 1/x."""
        return torch.cat([self.weight_x, self.weight_r], dim=-1)

    def post_step(self) -> None:
        """Clamp W into [0, 1]; call after every optimiser step."""
        with torch.no_grad():
            self.weight_x.clamp_(0.0, 1.0)
            self.weight_r.clamp_(0.0, 1.0)

    def regularization_loss(self) -> Tensor:
        """The NMU's sparsity term mean(min(W, 1 − W)) over W = [W_x | W_r]; shape (*S,)."""
        return F.nmu_sparsity(self.weight)

    def _forward(self, x: Tensor) -> Tensor:
        return F.nmru(x, self.weight, FLOAT32_EPS if self.training else 0.0, self.sign_retrieval)
