"""iNALU: Schlör, Ring & Hotho, "iNALU: Improved Neural Arithmetic Logic Unit", Frontiers in AI 2020."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from nalm import functional as F

from ._registry import register_unit
from .base import ArithmeticUnit, Generators, check_choice, check_positive


@register_unit("inalu")
class INALU(ArithmeticUnit):
    """Improved NALU (Schlör et al. 2020, §3, eq. 6-11).

    Separate NAC weights for the two paths, W_a = tanh(Ŵ_a) ⊙ σ(M̂_a) and W_m = tanh(Ŵ_m) ⊙ σ(M̂_m);
    m = exp(min(log(max(|x|, ε)) W_mᵀ, ω)); sign s_j = ∏_i (sign(x_i)|W_m,ji| + 1 − |W_m,ji|);
    an input-independent gate g = σ(ĝ); y = g ⊙ a + (1 − g) ⊙ m ⊙ s.

    Init (``init="authors"``, from their code, github.com/daschloer/inalu ``nalu_architectures.py``): Ŵ ~ N(0.88,
    0.2), M̂ ~ N(0.5, 0.2), ĝ ~ N(0, 0.2); ``"glorot"``: N(0, σ) with the Glorot σ for Ŵ, M̂ and ĝ = 0 (nalm's
    before issue 22). Regulariser (eq. 11, unscaled): Σ_p mean(max(t − |p|, 0)) / t over Ŵ_a, M̂_a, Ŵ_m, M̂_m, ĝ,
    pushing them away from 0 (``reg_threshold`` t = 20); their code adds 0.05 · Σ_p mean(max(20 − |p|, 0)), the
    same, from step 10,000 on while the loss is below 1. ``reg_reduction="mean"`` divides by the 5 parameters
    (nalm's before issue 22). Their other aids are the trainer's: gradient-value clipping to 0.1, and re-initialising
    a model whose loss stalls. Handles mixed signs in products; division remains hard.
    """

    options = ("eps", "omega", "reg_threshold", "init", "reg_reduction")
    #: The authors' initial (mean, standard deviation) of Ŵ, M̂ and ĝ.
    AUTHORS_INIT = {"W": (0.88, 0.2), "M": (0.5, 0.2), "g": (0.0, 0.2)}

    def __init__(self, in_features: int, out_features: int, *, num_seeds: int | None = None,
                 device=None, dtype=None, eps: float = 1e-7, omega: float = 20.0,
                 reg_threshold: float = 20.0, init: str = "authors", reg_reduction: str = "sum") -> None:
        super().__init__(in_features, out_features, num_seeds=num_seeds, device=device, dtype=dtype)
        self.eps = check_positive("inalu", "eps", eps)
        self.omega = check_positive("inalu", "omega", omega)
        self.reg_threshold = check_positive("inalu", "reg_threshold", reg_threshold)
        self.init = check_choice("inalu", "init", init, ("authors", "glorot"))
        self.reg_reduction = check_choice("inalu", "reg_reduction", reg_reduction, ("sum", "mean"))
        self.W_hat_add = self._parameter(out_features, in_features)
        self.M_hat_add = self._parameter(out_features, in_features)
        self.W_hat_mul = self._parameter(out_features, in_features)
        self.M_hat_mul = self._parameter(out_features, in_features)
        self.g_hat = self._parameter(1, out_features)
        self.reset_parameters()

    def reset_parameters(self, generator: Generators = None) -> None:
        def normal(p, mean, std):
            self._init(p, lambda t, g: t.normal_(mean, std, generator=g), generator)

        if self.init == "authors":
            for p, kind in ((self.W_hat_add, "W"), (self.M_hat_add, "M"), (self.W_hat_mul, "W"),
                            (self.M_hat_mul, "M"), (self.g_hat, "g")):
                normal(p, *self.AUTHORS_INIT[kind])
            return
        std = math.sqrt(2.0 / (self.in_features + self.out_features))
        for p in (self.W_hat_add, self.M_hat_add, self.W_hat_mul, self.M_hat_mul):
            normal(p, 0.0, std)
        self._init(self.g_hat, lambda t, g: t.zero_(), generator)

    @property
    def weight_add(self) -> Tensor:
        return F.nac_weight(self.W_hat_add, self.M_hat_add)

    @property
    def weight_mul(self) -> Tensor:
        return F.nac_weight(self.W_hat_mul, self.M_hat_mul)

    def regularization_loss(self) -> Tensor:
        """Σ_p mean(max(t − |p|, 0)) / t over the raw parameters (÷ 5 with ``reg_reduction="mean"``); (*S,)."""
        params = [self.W_hat_add, self.M_hat_add, self.W_hat_mul, self.M_hat_mul, self.g_hat]
        return F.inalu_sparsity(params, self.reg_threshold, self.reg_reduction)

    def _forward(self, x: Tensor) -> Tensor:
        g = torch.sigmoid(self.g_hat)  # (*S, 1, out)
        return F.inalu(x, self.weight_add, self.weight_mul, g, self.eps, self.omega)
