"""MCFC: the mass-conserving fully connected layer of Hoedt, Kratzert, Klotz, Halmich, Holzleitner, Nearing,
Hochreiter & Klambauer, "MC-LSTM: Mass-Conserving LSTM", ICML 2021."""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor

from nalm import functional as F

from ._registry import register_unit
from .base import ArithmeticUnit, Generators, check_choice, check_positive


@register_unit("mcfc")
class MCFC(ArithmeticUnit):
    """Mass-conserving fully connected layer (Hoedt et al. 2021): y = o ⊙ (x Mᵀ), M = softmax(R) over the outputs.

    M = softmax over the outputs of the logits R (out, in): the mass of each input is split over the outputs
    (each column of M sums to 1), so the layer adds and never subtracts; o = σ(w_o + b_o) (1, out) is the output
    gate, the share of each output's mass let out (their gate is a linear layer on the constant auxiliary input 1:
    weight w_o, bias b_o). ``mode="mul"``: the same in log space, y = exp(o ⊙ (log(|x| + ε) Mᵀ) + b) with a
    learned bias b (1, out), as Mistry et al. ran it on the benchmark (their ``MulMCFC``); it multiplies positive
    inputs and drops the sign. With one output M = 1 whatever R: the layer sums (or multiplies) all its inputs.

    Init as in the authors' code: R orthogonal (the identity when in = out), w_o orthogonal (a unit vector),
    b_o = b = 0. Regulariser (theirs, as Mistry et al. apply it): R = −(mean(R²) + mean(w_o²) + mean(b_o²)),
    which pushes the softmax and the gate towards saturation; it is negative.
    """

    options = ("mode", "eps")

    def __init__(self, in_features: int, out_features: int, *, num_seeds: int | None = None,
                 device=None, dtype=None, mode: str = "add", eps: float = 1e-7) -> None:
        super().__init__(in_features, out_features, num_seeds=num_seeds, device=device, dtype=dtype)
        self.mode = check_choice("mcfc", "mode", mode, ("add", "mul"))
        self.eps = check_positive("mcfc", "eps", eps)
        self.multiplicative = self.mode == "mul"
        self.R = self._parameter(out_features, in_features)
        self.gate_weight = self._parameter(1, out_features)
        self.gate_bias = self._parameter(1, out_features)
        if self.multiplicative:
            self.bias = self._parameter(1, out_features)
        self.reset_parameters()

    def reset_parameters(self, generator: Generators = None) -> None:
        if self.in_features == self.out_features:
            self._init(self.R, lambda t, g: t.copy_(torch.eye(self.out_features)), generator)
        else:
            self._init(self.R, lambda t, g: torch.nn.init.orthogonal_(t, generator=g), generator)
        self._init(self.gate_weight, lambda t, g: torch.nn.init.orthogonal_(t, generator=g), generator)
        self._init(self.gate_bias, lambda t, g: t.zero_(), generator)
        if self.multiplicative:
            self._init(self.bias, lambda t, g: t.zero_(), generator)

    @property
    def weight(self) -> Tensor:
        """The mass redistribution M = softmax(R) over the outputs, shape (*S, out, in); columns sum to 1."""
        return torch.softmax(self.R, dim=-2)

    def regularization_loss(self) -> Tensor:
        """−(mean(R²) + mean(w_o²) + mean(b_o²)); shape (*S,)."""
        return -cast(Tensor, sum(p.square().mean(dim=(-2, -1)) for p in (self.R, self.gate_weight, self.gate_bias)))

    def _forward(self, x: Tensor) -> Tensor:
        gate = self.gate_weight + self.gate_bias  # (*S, 1, out)
        if self.multiplicative:
            return F.mcfc_mul(x, self.R, gate, self.bias, self.eps)
        return F.mcfc(x, self.R, gate)
