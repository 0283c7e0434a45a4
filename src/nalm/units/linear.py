"""A plain affine layer with the seed axis: the baseline every arithmetic unit is measured against."""

from __future__ import annotations

import math

from torch import Tensor

from nalm import functional as F

from ._registry import register_unit
from .base import ArithmeticUnit, Generators, check_choice


@register_unit("linear")
class Linear(ArithmeticUnit):
    """y = x Wᵀ (+ b): ``nn.Linear`` with the seed axis and nn.Linear's initialisation.

    No bias by default, as the "Linear" model of Madsen & Johansen (2020); the MLP baselines use ``bias=True``.
    Extrapolates addition and subtraction when it finds the exact weights; cannot multiply.
    """

    options = ("bias",)

    def __init__(self, in_features: int, out_features: int, *, num_seeds: int | None = None,
                 device=None, dtype=None, bias: bool = False) -> None:
        super().__init__(in_features, out_features, num_seeds=num_seeds, device=device, dtype=dtype)
        self.bias = bool(check_choice("linear", "bias", bias, (True, False)))
        self.weight = self._parameter(out_features, in_features)
        self.b = self._parameter(1, out_features) if self.bias else None
        self.reset_parameters()

    def reset_parameters(self, generator: Generators = None) -> None:
        bound = 1.0 / math.sqrt(self.in_features)  # nn.Linear's default (Kaiming uniform with a = √5)
        self._uniform(self.weight, -bound, bound, generator)
        if self.b is not None:
            self._uniform(self.b, -bound, bound, generator)

    def _forward(self, x: Tensor) -> Tensor:
        y = F.linear(x, self.weight)
        return y if self.b is None else y + self.b
