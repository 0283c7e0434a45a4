"""sNMU: Mistry, Farrahi & Hare, "Improving the Robustness of Neural Multiplication Units with Reversible
Stochasticity", arXiv 2211.05624 (2022)."""

from __future__ import annotations

import torch
from torch import Tensor

from nalm import functional as F
from nalm.errors import ConfigError

from ._registry import register_unit
from .base import Generators, check_positive
from .madsen import NMU


@register_unit("snmu")
class SNMU(NMU):
    """Stochastic NMU (Mistry et al. 2022): y = NMU_W(x ⊙ n) / NMU_W(n), n ~ U[1, 5], in training mode only.

    Fresh noise n ~ U[``noise_low``, ``noise_high``] (default U[1, 5], the paper's) for every input of every row;
    in eval mode the plain NMU y_j = ∏_i (W_ji x_i + 1 − W_ji). For W ∈ {0, 1} the noise cancels exactly, so it
    only perturbs the non-discrete solutions. W clamped to [0, 1], init U[0.25, 0.75], the NMU's regulariser
    (the authors' code: github.com/bmistry4/nalm-robust-nmu, ``layer/re_regualized_linear_mnac.py``).

    The noise is drawn per seed, never from the global RNG: ``reset_parameters(generator)`` draws one 63-bit
    ``noise_key`` per seed from that seed's generator, and the noise of step t is the counter-based SplitMix64
    stream of (key, t) (:func:`nalm.functional.splitmix_uniform`), where t is ``noise_step``, advanced by
    :meth:`post_step` after every optimiser step. Both are buffers: a seed's noise depends on nothing that trains
    beside it, a stacked seed draws what its single copy draws, and a checkpoint resumes the same stream.
    """

    noise_key: Tensor  # buffers: each seed's noise stream and its position
    noise_step: Tensor
    options = ("noise_low", "noise_high")

    def __init__(self, in_features: int, out_features: int, *, num_seeds: int | None = None,
                 device=None, dtype=None, noise_low: float = 1.0, noise_high: float = 5.0) -> None:
        super().__init__(in_features, out_features, num_seeds=num_seeds, device=device, dtype=dtype)
        self.noise_low = check_positive("snmu", "noise_low", noise_low)
        self.noise_high = check_positive("snmu", "noise_high", noise_high)
        if not self.noise_low < self.noise_high:
            raise ConfigError(f"snmu: noise_low must be below noise_high, got {noise_low!r} and {noise_high!r}")

    def _add_state(self) -> None:
        device = self._factory["device"]
        self.register_buffer("noise_key", torch.zeros(self.seed_shape, dtype=torch.long, device=device))
        self.register_buffer("noise_step", torch.zeros(self.seed_shape, dtype=torch.long, device=device))

    def reset_parameters(self, generator: Generators = None) -> None:
        super().reset_parameters(generator)
        self._init(self.noise_key, lambda t, g: t.random_(generator=g), generator)
        self.noise_step.zero_()

    def post_step(self) -> None:
        """Clamp W into [0, 1] and move every seed's noise on to its next draw; call after every optimiser step."""
        super().post_step()
        self.noise_step += 1

    def _forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return F.nmu(x, self.weight)
        noise = F.splitmix_uniform(self.noise_key, self.noise_step, tuple(x.shape[-2:]), self.noise_low,
                                   self.noise_high)  # (*S, B, in)
        return F.snmu(x, self.weight, noise.to(device=x.device, dtype=x.dtype))
