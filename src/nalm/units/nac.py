"""NAC+, NAC• and NALU: Trask, Hill, Reed, Rae, Dyer & Blunsom, "Neural Arithmetic Logic Units", NeurIPS 2018."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from nalm import functional as F

from ._registry import register_unit
from .base import ArithmeticUnit, Generators, check_choice, check_positive


class _NACWeights(ArithmeticUnit):
    """A unit whose weight is W = tanh(Ŵ) ⊙ σ(M̂), recomputed from Ŵ, M̂ on every forward (never cached)."""

    #: ln b of the base b of tanh and σ (1: base e; the golden-ratio NALU sets ln φ).
    log_base = 1.0

    def __init__(self, in_features, out_features, *, num_seeds=None, device=None, dtype=None):
        super().__init__(in_features, out_features, num_seeds=num_seeds, device=device, dtype=dtype)
        self.W_hat = self._parameter(out_features, in_features)
        self.M_hat = self._parameter(out_features, in_features)

    def reset_parameters(self, generator: Generators = None) -> None:
        # The paper gives no initialisation; Glorot uniform for Ŵ and M̂ is the common choice.
        self._glorot(self.W_hat, generator)
        self._glorot(self.M_hat, generator)

    @property
    def weight(self) -> Tensor:
        """The effective weight W = tanh(Ŵ) ⊙ σ(M̂), shape (*S, out, in)."""
        return F.nac_weight(self.W_hat, self.M_hat, self.log_base)


@register_unit("nac")
class NAC(_NACWeights):
    """Neural Accumulator, NAC+ (Trask et al. 2018, §2, eq. 1): y = x Wᵀ, W = tanh(Ŵ) ⊙ σ(M̂), no bias.

    Learns addition and subtraction of its inputs; cannot multiply.
    """

    def __init__(self, in_features: int, out_features: int, *, num_seeds: int | None = None,
                 device=None, dtype=None) -> None:
        super().__init__(in_features, out_features, num_seeds=num_seeds, device=device, dtype=dtype)
        self.reset_parameters()

    def _forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight)


@register_unit("nac_mul")
class NACMul(_NACWeights):
    """Multiplicative NAC, NAC• (Trask et al. 2018, §2, the NALU's log-space path on its own):
    y = exp(log(|x| + ε) Wᵀ).

    Learns products, quotients and powers of positive inputs; loses the sign of negative ones, and near 0 the
    log makes gradients explode (ε = 1e-7 by default, not given in the paper).
    """

    options = ("eps",)
    multiplicative = True

    def __init__(self, in_features: int, out_features: int, *, num_seeds: int | None = None,
                 device=None, dtype=None, eps: float = 1e-7) -> None:
        super().__init__(in_features, out_features, num_seeds=num_seeds, device=device, dtype=dtype)
        self.eps = check_positive("nac_mul", "eps", eps)
        self.reset_parameters()

    def _forward(self, x: Tensor) -> Tensor:
        return F.nac_mul(x, self.weight, self.eps)


@register_unit("nalu")
class NALU(_NACWeights):
    """Neural Arithmetic Logic Unit (Trask et al. 2018, §2, eq. 2-5).

    a = x Wᵀ; m = exp(log(|x| + ε) Wᵀ); g = σ(x Gᵀ); y = g ⊙ a + (1 − g) ⊙ m.

    Options: ``tied`` (default True, as in the paper: "two NACs with tied weights") — False gives the
    multiplicative path its own Ŵ_m, M̂_m; ``gate`` = "input" (the paper's g = σ(x Gᵀ)) or "independent"
    (g = σ(ĝ), one learned logit per output, as in iNALU); ``eps`` of the log path (1e-7; not in the paper).
    Known limits: extrapolates multiplication poorly, cannot handle negative inputs in the multiplicative path,
    and diverges in a fraction of seeds (Madsen & Johansen 2020).
    """

    options = ("tied", "gate", "eps")

    def __init__(self, in_features: int, out_features: int, *, num_seeds: int | None = None,
                 device=None, dtype=None, tied: bool = True, gate: str = "input", eps: float = 1e-7) -> None:
        super().__init__(in_features, out_features, num_seeds=num_seeds, device=device, dtype=dtype)
        self.tied = bool(check_choice(self.unit_name, "tied", tied, (True, False)))
        self.gate = check_choice(self.unit_name, "gate", gate, ("input", "independent"))
        self.eps = check_positive(self.unit_name, "eps", eps)
        if not self.tied:
            self.W_hat_mul = self._parameter(out_features, in_features)
            self.M_hat_mul = self._parameter(out_features, in_features)
        if self.gate == "input":
            self.G = self._parameter(out_features, in_features)
        else:
            self.g_hat = self._parameter(1, out_features)
        self.reset_parameters()

    def reset_parameters(self, generator: Generators = None) -> None:
        super().reset_parameters(generator)
        if not self.tied:
            self._glorot(self.W_hat_mul, generator)
            self._glorot(self.M_hat_mul, generator)
        if self.gate == "input":
            self._glorot(self.G, generator)
        else:
            self._init(self.g_hat, lambda t, g: t.zero_(), generator)  # g = 0.5: both paths open

    @property
    def weight_mul(self) -> Tensor:
        return self.weight if self.tied else F.nac_weight(self.W_hat_mul, self.M_hat_mul, self.log_base)

    def _forward(self, x: Tensor) -> Tensor:
        logit = F.linear(x, self.G) if self.gate == "input" else self.g_hat  # (*S, B, out) or (*S, 1, out)
        g = torch.sigmoid(logit * self.log_base if self.log_base != 1.0 else logit)
        w = self.weight
        return F.nalu(x, w, w if self.tied else self.weight_mul, g, self.eps)


@register_unit("gnalu")
class GNALU(NALU):
    """Golden-ratio NALU, G-NALU (Rana et al. 2019; run in the Primer of Mistry, Farrahi & Hare 2022):
    the NALU with the golden ratio φ = (1 + √5) / 2 in place of e as the base of its exponentials.

    As in the Primer's code (nalm-benchmark: ``--nac-weight --nalu-gate --nalu-mul golden-ratio``): weights
    W = tanh_φ(Ŵ) ⊙ σ_φ(M̂) and gate g = σ_φ(x Gᵀ), where σ_φ(t) = 1 / (1 + φ^−t) = σ(t ln φ) and tanh_φ(t) =
    tanh(t ln φ); multiplicative path m = φ^(log_φ(|x| + ε) Wᵀ), which equals the NALU's exp(log(|x| + ε) Wᵀ), so
    it is computed as such. The change of base therefore only flattens the weight and gate nonlinearities by
    ln φ ≈ 0.481. Options and limits as for ``nalu``.
    """

    log_base = math.log((1 + math.sqrt(5)) / 2)
