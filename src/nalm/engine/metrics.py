"""Metrics any experiment may use: per-seed losses and evaluation, sparsity error, the Wilson interval, the
normalised error and the per-configuration summary (success rate, solved-at, sparsity).

Sources: "solved at" and the sparsity error follow Madsen & Johansen (2020, §4.1 and appendix, "Neural Arithmetic
Units", ICLR); the interval is Wilson's (1927); the normalised error is the score of Trask et al. (2018, Table 1). The
arithmetic experiments' success thresholds live with them (:mod:`nalm.experiments.arithmetic.thresholds`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from nalm import functional as F
from nalm.nn.models import arithmetic_units

__all__ = ["wilson_interval", "normalized_error", "summarize", "per_seed_mse", "per_seed_cross_entropy", "evaluate",
           "sparsity"]


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927, JASA 22:209), clamped to [0, 1].

    (p̂ + z²/2n ± z·sqrt(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n); the default z gives 95 %. n == 0 -> (0, 1).
    z must be positive.
    """
    if n <= 0:
        return 0.0, 1.0
    p, z2 = successes / n, z * z
    denom = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # At k = 0 (k = n) the lower (upper) bound is exactly 0 (1); set it so rounding leaves no 5e-17.
    low = 0.0 if successes <= 0 else max(0.0, center - half)
    return low, 1.0 if successes >= n else min(1.0, center + half)


def _float(v) -> float:
    return math.nan if v is None else float(v)


def normalized_error(errors, baseline_errors) -> float:
    """Normalised error of Trask et al. (2018, Table 1): 100 × err(model) / err(random init of the same model).

    Per seed s: 100 · errors[s] / baseline_errors[s], the baseline being the same seed's MSE at initialisation;
    a diverged seed (NaN or inf error) counts as +inf; a baseline that is 0 or not finite leaves the seed undefined
    (NaN) and it is skipped. We report the median over seeds (the paper does not say how seeds are pooled): a single
    diverged seed would make a mean infinite. NaN when no seed is defined.
    """
    err = np.array([_float(e) for e in errors], dtype=np.float64)
    base = np.array([_float(e) for e in baseline_errors], dtype=np.float64)
    if err.shape != base.shape:
        raise ValueError(f"errors and baseline_errors differ in length: {err.shape} vs {base.shape}")
    with np.errstate(all="ignore"):
        ratio = 100 * err / base
    ratio[~np.isfinite(err)] = math.inf
    ratio[(base == 0) | ~np.isfinite(base)] = math.nan
    ratio = ratio[~np.isnan(ratio)]
    return float(np.median(ratio)) if ratio.size else math.nan


def summarize(records: list[dict]) -> dict:
    """Aggregate one configuration's per-seed records as Madsen & Johansen (2020, §4.1) report them.

    success rate with a Wilson 95 % interval; "solved at" (median) and sparsity error (mean) over successful seeds
    only; diverged seeds count as failures and, in the normalised errors (Trask et al. 2018), as +inf.
    Undefined values are None (the normalised errors may be inf).
    """
    n = len(records)
    ok = [r for r in records if r.get("success") and not r.get("diverged")]
    solved = [r["solved_at"] for r in ok if r.get("solved_at") is not None]
    sparsity = [r["sparsity_error"] for r in ok if r.get("sparsity_error") is not None]
    low, high = wilson_interval(len(ok), n)

    def norm(split: str):
        errors = [math.inf if r.get("diverged") else _float(r.get(f"{split}_mse")) for r in records]
        value = normalized_error(errors, [r.get(f"{split}_mse_init") for r in records])
        return None if math.isnan(value) else value

    return {
        "seeds": n,
        "successes": len(ok),
        "success_rate": len(ok) / n if n else None,
        "success_ci": [low, high],
        "solved_at_median": float(np.median(solved)) if solved else None,
        "sparsity_error_mean": float(np.mean(sparsity)) if sparsity else None,
        "diverged": sum(1 for r in records if r.get("diverged")),
        "normalized_interpolation_error": norm("interpolation"),
        "normalized_extrapolation_error": norm("extrapolation"),
    }


def per_seed_mse(pred: Tensor, y: Tensor) -> Tensor:
    """(S, B, ...), (S, B, ...) -> (S,): the mean squared error of each seed."""
    return (pred - y).pow(2).flatten(1).mean(dim=1)


def per_seed_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """(S, B, ..., C) logits, (S, B, ...) integer labels -> (S,): the mean cross-entropy of each seed."""
    S, C = logits.shape[0], logits.shape[-1]
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, C), labels.reshape(-1), reduction="none")
    return ce.view(S, -1).mean(dim=1)


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, num_seeds: int, max_elements: int = 16_000_000,
             device=None) -> Tensor:
    """Per-seed MSE (float64) on a fixed set x (1 or S, N, ...) with targets y (1 or S, N, out), in chunks."""
    S, N = num_seeds, y.shape[1]
    y = y.expand((S,) + y.shape[1:])
    per_row = S * max(1, math.prod(x.shape[2:]))
    chunk = max(1, max_elements // per_row)
    sse = torch.zeros(S, dtype=torch.float64, device=device)
    for i in range(0, N, chunk):
        xc = x[:, i:i + chunk]
        pred = model(xc.expand((S,) + xc.shape[1:]).to(device))
        sse += (pred.double() - y[:, i:i + chunk].to(device).double()).pow(2).sum(dim=(-2, -1))
    return (sse / (N * y.shape[-1])).cpu()


def sparsity(model: nn.Module, num_seeds: int) -> Tensor:
    """Max sparsity error over the model's arithmetic units that have one weight matrix; NaN if none."""
    errors = [F.sparsity_error(u.weight.detach()).cpu() for u in arithmetic_units(model) if isinstance(
        getattr(u, "weight", None), Tensor)]
    if not errors:
        return torch.full((num_seeds,), float("nan"), dtype=torch.float64)
    return torch.stack(errors).amax(dim=0).double()
