"""NPU and RealNPU: Heim, Pevný & Šmídl, "Neural Power Units", NeurIPS 2020."""

from __future__ import annotations

import torch
from torch import Tensor

from nalm import functional as F

from ._registry import register_unit
from .base import ArithmeticUnit, Generators, check_positive


@register_unit("npu")
class NPU(ArithmeticUnit):
    """Neural Power Unit (Heim et al. 2020, §3, eq. 5-7): a complex-valued log-space unit.

    ĝ = clamp(g, 0, 1) (a relevance gate per input, init 0.5); r = ĝ ⊙ |x| + (1 − ĝ); k = π ĝ ⊙ [x < 0];
    y = exp(log(r) W_rᵀ − k W_iᵀ) ⊙ cos(log(r) W_iᵀ + k W_rᵀ).
    Init: Glorot uniform W_r, W_i = 0. Learns products, quotients and fractional powers, negative inputs
    included; ĝ → 0 switches an irrelevant input (or a zero) off. ``eps`` floors r before the log.
    """

    options = ("eps",)
    multiplicative = True
    imaginary = True

    def __init__(self, in_features: int, out_features: int, *, num_seeds: int | None = None,
                 device=None, dtype=None, eps: float = 1e-7) -> None:
        super().__init__(in_features, out_features, num_seeds=num_seeds, device=device, dtype=dtype)
        self.eps = check_positive(self.unit_name, "eps", eps)
        self.W_real = self._parameter(out_features, in_features)
        if self.imaginary:
            self.W_imag = self._parameter(out_features, in_features)
        self.gate = self._parameter(1, in_features)
        self.reset_parameters()

    def reset_parameters(self, generator: Generators = None) -> None:
        self._glorot(self.W_real, generator)
        if self.imaginary:
            self._init(self.W_imag, lambda t, g: t.zero_(), generator)
        self._init(self.gate, lambda t, g: t.fill_(0.5), generator)

    def regularization_loss(self) -> Tensor:
        """The L1 norm of every parameter (W_r, W_i, g), per seed: Heim et al.'s sparsity penalty, weighted by a
        schedule β(t) (the trainer's regulariser for the unit; none by default)."""
        params = [self.W_real, self.gate] + ([self.W_imag] if self.imaginary else [])
        return sum(p.abs().sum(dim=(-2, -1)) for p in params)  # type: ignore[return-value]

    def post_step(self) -> None:
        """Keep the relevance gate in [0, 1]; call after every optimiser step."""
        with torch.no_grad():
            self.gate.clamp_(0.0, 1.0)

    def _forward(self, x: Tensor) -> Tensor:
        return F.npu(x, self.W_real, self.W_imag if self.imaginary else None, self.gate, self.eps)


@register_unit("realnpu")
class RealNPU(NPU):
    """RealNPU (Heim et al. 2020, §3, eq. 8): the NPU with W_i = 0, so y = exp(log(r) W_rᵀ) ⊙ cos(k W_rᵀ).

    Cheaper and easier to train than the NPU; still keeps the sign of negative inputs through cos(π ·).
    """

    imaginary = False
