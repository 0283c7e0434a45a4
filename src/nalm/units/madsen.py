"""NAU and NMU: Madsen & Johansen, "Neural Arithmetic Units", ICLR 2020."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from nalm import functional as F

from ._registry import register_unit
from .base import ArithmeticUnit, Generators


class _ClampedWeight(ArithmeticUnit):
    """A unit with one weight W kept in [low, 1] by :meth:`post_step`."""

    low = 0.0

    def __init__(self, in_features, out_features, *, num_seeds=None, device=None, dtype=None):
        super().__init__(in_features, out_features, num_seeds=num_seeds, device=device, dtype=dtype)
        self.weight = self._parameter(out_features, in_features)
        self._add_state()
        self.reset_parameters()

    def _add_state(self) -> None:
        """Subclasses register further parameters or buffers here, before the first reset."""

    def post_step(self) -> None:
        """Clamp W into its range; call after every optimiser step."""
        with torch.no_grad():
            self.weight.clamp_(self.low, 1.0)


@register_unit("nau")
class NAU(_ClampedWeight):
    """Neural Addition Unit (Madsen & Johansen 2020, §3.1, eq. 6-7): y = x Wᵀ with W clamped to [−1, 1].

    Init W ~ U[−r, r], r = min(0.5, √(6 / (in + out))). Regulariser (unscaled) R = mean(min(|W|, 1 − |W|)),
    which the trainer scales by a λ(t) ramp. Learns addition and subtraction robustly; cannot multiply.
    """

    low = -1.0

    def reset_parameters(self, generator: Generators = None) -> None:
        r = min(0.5, math.sqrt(6.0 / (self.in_features + self.out_features)))
        self._uniform(self.weight, -r, r, generator)

    def regularization_loss(self) -> Tensor:
        """The sparsity term mean(min(|W|, 1 − |W|)); shape (*S,)."""
        return F.nau_sparsity(self.weight)

    def _forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight)


@register_unit("nmu")
class NMU(_ClampedWeight):
    """Neural Multiplication Unit (Madsen & Johansen 2020, §3.2, eq. 9-10): y_j = ∏_i (W_ji x_i + 1 − W_ji),
    W clamped to [0, 1].

    Init W ~ U[0.25, 0.75]. Regulariser (unscaled) R = mean(min(W, 1 − W)). Multiplies any subset of its inputs,
    negative ones included; cannot divide.
    """

    multiplicative = True

    def reset_parameters(self, generator: Generators = None) -> None:
        self._uniform(self.weight, 0.25, 0.75, generator)

    def regularization_loss(self) -> Tensor:
        """The sparsity term mean(min(W, 1 − W)); shape (*S,)."""
        return F.nmu_sparsity(self.weight)

    def _forward(self, x: Tensor) -> Tensor:
        return F.nmu(x, self.weight)
