"""NAC+, NAC• and NALU: Trask, Hill, Reed, Rae, Dyer & Blunsom, "Neural Arithmetic Logic Units", NeurIPS 2018."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from nalm import functional as F
from nalm.errors import ConfigError

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
    multiplicative path its own Ŵ_m, M̂_m; ``gate`` = "input" (the paper's g = σ(x Gᵀ)), "independent"
    (g = σ(ĝ), one learned logit per output, as in iNALU) or "fixed" (g = ``gate_value`` everywhere, never
    learned: a controlled experiment's gate; at 1 the unit is exactly the NAC); ``eps`` of the log path (1e-7; not
    in the paper).
    Known limits: extrapolates multiplication poorly, cannot handle negative inputs in the multiplicative path,
    and diverges in a fraction of seeds (Madsen & Johansen 2020).
    """

    options = ("tied", "gate", "eps", "gate_value")

    def __init__(self, in_features: int, out_features: int, *, num_seeds: int | None = None,
                 device=None, dtype=None, tied: bool = True, gate: str = "input", eps: float = 1e-7,
                 gate_value: float = 1.0) -> None:
        super().__init__(in_features, out_features, num_seeds=num_seeds, device=device, dtype=dtype)
        self.tied = bool(check_choice(self.unit_name, "tied", tied, (True, False)))
        self.gate = check_choice(self.unit_name, "gate", gate, ("input", "independent", "fixed"))
        self.eps = check_positive(self.unit_name, "eps", eps)
        if not (isinstance(gate_value, (int, float)) and not isinstance(gate_value, bool) and 0 <= gate_value <= 1):
            raise ConfigError(f"{self.unit_name}: gate_value must be a number in [0, 1], got {gate_value!r}")
        if gate != "fixed" and gate_value != 1.0:
            raise ConfigError(f"{self.unit_name}: gate_value={gate_value!r} needs gate='fixed' (the gate is learned "
                              f"otherwise)")
        self.gate_value = float(gate_value)
        if not self.tied:
            self.W_hat_mul = self._parameter(out_features, in_features)
            self.M_hat_mul = self._parameter(out_features, in_features)
        if self.gate == "input":
            self.G = self._parameter(out_features, in_features)
        elif self.gate == "independent":
            self.g_hat = self._parameter(1, out_features)
        self.reset_parameters()

    def reset_parameters(self, generator: Generators = None) -> None:
        super().reset_parameters(generator)
        if not self.tied:
            self._glorot(self.W_hat_mul, generator)
            self._glorot(self.M_hat_mul, generator)
        if self.gate == "input":
            self._glorot(self.G, generator)
        elif self.gate == "independent":
            self._init(self.g_hat, lambda t, g: t.zero_(), generator)  # g = 0.5: both paths open

    @property
    def weight_mul(self) -> Tensor:
        return self.weight if self.tied else F.nac_weight(self.W_hat_mul, self.M_hat_mul, self.log_base)

    def _gate(self, x: Tensor) -> Tensor:
        """g after the sigmoid, broadcastable to the output (*S, B, out)."""
        if self.gate == "fixed":
            return torch.full((1, self.out_features), self.gate_value, dtype=x.dtype, device=x.device)
        logit = F.linear(x, self.G) if self.gate == "input" else self.g_hat  # (*S, B, out) or (*S, 1, out)
        return torch.sigmoid(logit * self.log_base if self.log_base != 1.0 else logit)

    def _forward(self, x: Tensor) -> Tensor:
        if self.gate == "fixed" and self.gate_value == 1.0:  # exactly the NAC (0 · m would be NaN where m is inf)
            return F.linear(x, self.weight)
        g = self._gate(x)
        w = self.weight
        return F.nalu(x, w, w if self.tied else self.weight_mul, g, self.eps)

    @torch.no_grad()
    def diagnostics(self, x: Tensor) -> dict[str, Tensor]:
        """Per seed, over the inputs x (*S, B, in): the gate's mean and spread (1: additive path, 0: multiplicative),
        the mean |W| of each path, and the largest |log(|x| + ε) W_mᵀ|, the log path's pre-activation (large values
        are the heavy tail that makes its gradients explode)."""
        x = x.detach()
        g = self._gate(x).expand(x.shape[:-1] + (self.out_features,))
        lead = len(self.seed_shape)
        w_add, w_mul = self.weight.detach(), self.weight_mul.detach()
        log_path = F.linear(torch.log(x.abs() + self.eps), w_mul)
        return {"gate_mean": g.flatten(lead).mean(-1), "gate_std": g.flatten(lead).std(-1, correction=0),
                "add_weight_abs_mean": w_add.abs().flatten(lead).mean(-1),
                "mul_weight_abs_mean": w_mul.abs().flatten(lead).mean(-1),
                "log_path_abs_max": log_path.abs().flatten(lead).amax(-1)}


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
