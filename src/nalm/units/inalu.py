"""iNALU: Schlör, Ring & Hotho, "iNALU: Improved Neural Arithmetic Logic Unit", Frontiers in AI 2020."""

from __future__ import annotations

import math

import numpy as np
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
    (nalm's before issue 22). Handles mixed signs in products; division remains hard.

    ``reinit`` (off by default): the authors' re-initialisation aid, per seed. :meth:`observe_loss` takes each
    step's per-seed training loss (the trainer calls it on every module that has it); every 10th observation, a seed
    with more than 10,000 losses since its last (re)start whose older half's mean is ≤ the newer half's mean + std
    and whose newer half's mean is > 1 gets fresh parameters from its own stream (its ``reinit_key`` and
    ``reinit_count``, buffers) and starts a new history (their code, ``nalu_syn_simple_arith.py``; the optimiser's
    moments stay, as in the Primer's PyTorch port). The loss history itself is not saved with the state: a resumed
    run starts it afresh. An experiment turns the aid on as the authors ran it with ``get_unit("inalu", ...,
    reinit=True)``, ``TrainConfig(grad_clip_value=0.1)`` and the regulariser at λ = 1 from step 10,000.
    """

    reinit_key: Tensor  # buffers of the re-initialisation aid (with ``reinit``)
    reinit_count: Tensor
    options = ("eps", "omega", "reg_threshold", "init", "reg_reduction", "reinit")
    #: The authors' initial (mean, standard deviation) of Ŵ, M̂ and ĝ.
    AUTHORS_INIT = {"W": (0.88, 0.2), "M": (0.5, 0.2), "g": (0.0, 0.2)}

    def __init__(self, in_features: int, out_features: int, *, num_seeds: int | None = None,
                 device=None, dtype=None, eps: float = 1e-7, omega: float = 20.0,
                 reg_threshold: float = 20.0, init: str = "authors", reg_reduction: str = "sum",
                 reinit: bool = False) -> None:
        super().__init__(in_features, out_features, num_seeds=num_seeds, device=device, dtype=dtype)
        self.eps = check_positive("inalu", "eps", eps)
        self.omega = check_positive("inalu", "omega", omega)
        self.reg_threshold = check_positive("inalu", "reg_threshold", reg_threshold)
        self.init = check_choice("inalu", "init", init, ("authors", "glorot"))
        self.reg_reduction = str(check_choice("inalu", "reg_reduction", reg_reduction, ("sum", "mean")))
        self.reinit = bool(check_choice("inalu", "reinit", reinit, (True, False)))
        if self.reinit:
            for name in ("reinit_key", "reinit_count"):
                self.register_buffer(name, torch.zeros(self.seed_shape, dtype=torch.long,
                                                       device=self._factory["device"]))
        self._history: _LossHistory | None = None
        self.W_hat_add = self._parameter(out_features, in_features)
        self.M_hat_add = self._parameter(out_features, in_features)
        self.W_hat_mul = self._parameter(out_features, in_features)
        self.M_hat_mul = self._parameter(out_features, in_features)
        self.g_hat = self._parameter(1, out_features)
        self.reset_parameters()

    def reset_parameters(self, generator: Generators = None) -> None:
        self._draw(generator)
        if self.reinit:
            self._init(self.reinit_key, lambda t, g: t.random_(generator=g), generator)
            self.reinit_count.zero_()
        self._history = None

    def _draw(self, generator: Generators, into: list[Tensor] | None = None) -> None:
        """Draw Ŵ_a, M̂_a, Ŵ_m, M̂_m and ĝ by the ``init`` rule, into the parameters or into ``into`` (same shapes)."""
        w_a, m_a, w_m, m_m, g = into if into is not None else self._raw()

        def normal(p, mean, std):
            self._init(p, lambda t, gen: t.normal_(mean, std, generator=gen), generator)

        if self.init == "authors":
            for p, kind in ((w_a, "W"), (m_a, "M"), (w_m, "W"), (m_m, "M"), (g, "g")):
                normal(p, *self.AUTHORS_INIT[kind])
            return
        std = math.sqrt(2.0 / (self.in_features + self.out_features))
        for p in (w_a, m_a, w_m, m_m):
            normal(p, 0.0, std)
        self._init(g, lambda t, gen: t.zero_(), generator)

    def _raw(self) -> list[Tensor]:
        """The raw parameters Ŵ_a, M̂_a, Ŵ_m, M̂_m, ĝ."""
        return [self.W_hat_add, self.M_hat_add, self.W_hat_mul, self.M_hat_mul, self.g_hat]

    @property
    def weight_add(self) -> Tensor:
        return F.nac_weight(self.W_hat_add, self.M_hat_add)

    @property
    def weight_mul(self) -> Tensor:
        return F.nac_weight(self.W_hat_mul, self.M_hat_mul)

    def regularization_loss(self) -> Tensor:
        """Σ_p mean(max(t − |p|, 0)) / t over the raw parameters (÷ 5 with ``reg_reduction="mean"``); (*S,)."""
        return F.inalu_sparsity(self._raw(), self.reg_threshold, self.reg_reduction)

    def _forward(self, x: Tensor) -> Tensor:
        g = torch.sigmoid(self.g_hat)  # (*S, 1, out)
        return F.inalu(x, self.weight_add, self.weight_mul, g, self.eps, self.omega)

    def observe_loss(self, loss: Tensor) -> None:
        """Record this step's per-seed training loss, shape (*S,); with ``reinit``, re-initialise the stalled seeds."""
        if not self.reinit:
            return
        if self._history is None:
            self._history = _LossHistory(max(1, math.prod(self.seed_shape)))
        stalled = self._history.add(loss.detach().double().cpu().reshape(-1).numpy())
        if stalled.size:
            self._reinitialise(stalled)

    def _reinitialise(self, seeds: np.ndarray) -> None:
        """Fresh parameters for ``seeds`` (flat indices), each drawn on the CPU from its own (key, count) stream."""
        count = self.reinit_count.reshape(-1)
        count[torch.from_numpy(seeds).to(count.device)] += 1
        words = F.splitmix_uniform(self.reinit_key, self.reinit_count, (1,), 0.0, 2.0**53).reshape(-1)
        gens = [torch.Generator().manual_seed(int(w)) for w in words.tolist()]
        fresh = [torch.empty(p.shape, dtype=p.dtype) for p in self._raw()]
        self._draw(gens if self.num_seeds is not None else gens[0], fresh)
        rows = torch.from_numpy(seeds)
        with torch.no_grad():
            for p, q in zip(self._raw(), fresh):
                if self.num_seeds is None:
                    p.copy_(q)
                else:
                    p[rows.to(p.device)] = q[rows].to(p.device)


class _LossHistory:
    """Per-seed running sums of the losses and their squares since each seed's last (re)start, so that the stall
    rule's means and standard deviations of the two halves cost O(1) per check."""

    MIN_LOSSES, EVERY, THRESHOLD = 10_000, 10, 1.0

    def __init__(self, seeds: int) -> None:
        self.sums = np.zeros((2, seeds, 1024))  # [Σ loss, Σ loss²] over the first n losses, at column n
        self.count = np.zeros(seeds, dtype=np.int64)
        self.steps = 0

    def add(self, loss: np.ndarray) -> np.ndarray:
        """Append one loss per seed; every EVERY-th call return the seeds whose loss stalls (and clear them)."""
        rows = np.arange(loss.size)
        if self.count.max() + 1 >= self.sums.shape[2]:
            self.sums = np.concatenate([self.sums, np.zeros_like(self.sums)], axis=2)
        n = self.count
        self.sums[:, rows, n + 1] = self.sums[:, rows, n] + np.stack([loss, loss * loss])
        self.count += 1
        self.steps += 1
        if self.steps % self.EVERY:
            return rows[:0]
        n, h = self.count, self.count // 2
        s1, s2 = self.sums[:, rows, n], self.sums[:, rows, h]  # up to n and up to h: (2, S) each
        with np.errstate(invalid="ignore", divide="ignore"):
            old_mean = s2[0] / h
            new_mean = (s1[0] - s2[0]) / (n - h)
            new_std = np.sqrt(np.maximum((s1[1] - s2[1]) / (n - h) - new_mean**2, 0.0))
            stalled = (n > self.MIN_LOSSES) & (old_mean <= new_mean + new_std) & (new_mean > self.THRESHOLD)
        seeds = np.flatnonzero(stalled)
        self.count[seeds] = 0
        return seeds
