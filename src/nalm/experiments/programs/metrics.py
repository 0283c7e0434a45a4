"""Metrics of program evaluation (Trask et al. 2018, §4.4): the paper's "% of digits correct", exact match, MAE.

All take predictions (S, N) (a trailing axis of 1 allowed) in value units (divide a scaled prediction by the
task's ``value_scale`` first) and integer targets (S or 1, N), and return one float64 value per seed, (S,).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from nalm.errors import ShapeError

__all__ = ["digit_accuracy", "exact_match", "mean_absolute_error"]

_MAX_EXACT = 1e18  # a rounded prediction below this in magnitude fits int64


def _per_seed(pred, target) -> tuple[np.ndarray, np.ndarray]:
    p = pred.detach().cpu().double().numpy() if isinstance(pred, Tensor) else np.asarray(pred, dtype=np.float64)
    t = target.detach().cpu().numpy() if isinstance(target, Tensor) else np.asarray(target)
    if p.ndim == 3 and p.shape[-1] == 1:
        p = p[..., 0]
    if t.ndim == 3 and t.shape[-1] == 1:
        t = t[..., 0]
    if p.ndim != 2 or t.ndim != 2 or t.shape[1] != p.shape[1] or t.shape[0] not in (1, p.shape[0]):
        raise ShapeError(f"expected predictions (S, N) and targets (S or 1, N) (a trailing 1 allowed), got "
                         f"{p.shape} and {t.shape}")
    t = np.rint(t.astype(np.float64)).astype(np.int64) if t.dtype.kind == "f" else t.astype(np.int64)
    return p, np.broadcast_to(t, p.shape)


def _num_digits(a: np.ndarray) -> np.ndarray:
    """Decimal digits of |a| (int64, 0 has one digit)."""
    a = np.abs(a)
    n = np.ones(a.shape, dtype=np.int64)
    for k in range(1, 19):
        n += a >= 10**k
    return n


def digit_accuracy(pred, target) -> Tensor:
    """Share of matching digits per seed, the NALU paper's "% digits correct" (as a fraction in [0, 1]).

    The prediction is rounded (half to even, as Python's ``round``) and compared with the integer target digit by
    digit, right-aligned (units with units). A program's positions are the union of both numbers' digit positions
    plus one sign position when either is negative: a missing or an extra digit, or a wrong sign, is a wrong
    position. Each program scores matching / positions; a seed's score is the mean over its programs (a
    non-finite prediction, or one of 10¹⁸ or more, scores 0).
    pred (S, N), target (S or 1, N) (a trailing axis of 1 is allowed) -> (S,) float64.

    Example: target 1234, prediction 1233.6 -> "1234": 1; prediction 234 -> 3/4; prediction 21234 -> 4/5;
    target −5, prediction 5 -> 1/2 (the sign position is wrong).
    """
    p, t = _per_seed(pred, target)
    finite = np.abs(p) < _MAX_EXACT  # False for NaN and ±inf too
    pi = np.rint(np.where(finite, p, 0.0)).astype(np.int64)
    lp, lt = _num_digits(pi), _num_digits(t)
    a, b = np.abs(pi), np.abs(t)
    matches = np.zeros(p.shape, dtype=np.int64)
    for k in range(int(lt.max(initial=1))):
        matches += (k < lp) & (k < lt) & ((a // 10**k) % 10 == (b // 10**k) % 10)
    p_neg, t_neg = pi < 0, t < 0  # −0.3 rounds to 0, which has no sign
    matches += p_neg & t_neg
    positions = np.maximum(lp, lt) + (p_neg | t_neg)
    score = np.where(finite, matches / positions, 0.0)
    return torch.from_numpy(score.mean(axis=1))


def exact_match(pred, target) -> Tensor:
    """Share of programs whose rounded prediction equals the target, per seed: (S, N), (S or 1, N) -> (S,)."""
    p, t = _per_seed(pred, target)
    with np.errstate(invalid="ignore"):
        return torch.from_numpy((np.rint(p) == t).mean(axis=1))


def mean_absolute_error(pred, target) -> Tensor:
    """Mean |prediction − target| per seed, in value units (divide a scaled prediction by value_scale first)."""
    p, t = _per_seed(pred, target)
    return torch.from_numpy(np.abs(p - t).mean(axis=1))
