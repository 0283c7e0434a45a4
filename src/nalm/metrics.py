"""Metrics of the arithmetic benchmark: success threshold, Wilson interval, normalised error, per-config summary.

Sources: the success criterion, "solved at" and sparsity error follow Madsen & Johansen (2020, §4.1 and appendix,
"Neural Arithmetic Units", ICLR); the interval is Wilson's (1927); the normalised error is the score of Trask et al.
(2018, Table 1).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from functools import lru_cache

import numpy as np

from .ranges import Range
from .tasks.arithmetic import OPERATIONS, ArithmeticConfig

__all__ = ["wilson_interval", "success_threshold", "normalized_error", "summarize"]

#: How many float64 inputs one Monte Carlo chunk holds (16 MiB); fixed so results do not depend on memory.
_CHUNK_VALUES = 1 << 21


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


def _subsets(config: ArithmeticConfig) -> tuple[tuple[int, int], tuple[int, int]]:
    """The two subsets as slices; a random-offset config uses offset 0 (inputs are i.i.d., so the MSE is the same)."""
    if config.fixed_subsets is not None:
        return tuple(tuple(s) for s in config.fixed_subsets)  # type: ignore[return-value]
    size, shift = config.subset_size, config.subset_size - config.overlap_size
    return (0, size), (shift, shift + size)


@lru_cache(maxsize=None)
def _threshold(operation: str, input_size: int, a: tuple[int, int], b: tuple[int, int],
               intervals: tuple[tuple[float, float], ...], length: int, eps: float, samples: int, seed: int) -> float:
    op = OPERATIONS[operation][0]
    rng_range = Range(intervals)
    rng = np.random.Generator(np.random.PCG64(seed))
    rows = max(1, _CHUNK_VALUES // (length * input_size))
    total, done = 0.0, 0
    with np.errstate(all="ignore"):
        while done < samples:
            n = min(rows, samples - done)
            x = rng_range.transform(rng.random((n, length, input_size)))  # float64, drawn row by row
            x = x.sum(axis=1)  # sum over time steps (length 1 in the static form)
            s = x.sum(axis=1)
            a_sum, b_sum = x[:, a[0]:a[1]].sum(axis=1), x[:, b[0]:b[1]].sum(axis=1)
            # Selected weights 1 -> 1 - eps, all others 0 -> eps: a' = (1 - eps)·a + eps·(s - a).
            a_eps, b_eps = (1 - 2 * eps) * a_sum + eps * s, (1 - 2 * eps) * b_sum + eps * s
            total += float(np.sum((op(a_eps, b_eps) - op(a_sum, b_sum)) ** 2))
            done += n
    return total / samples


@lru_cache(maxsize=None)
def _recurrent_threshold(operation: str, input_size: int, a: tuple[int, int], b: tuple[int, int],
                         intervals: tuple[tuple[float, float], ...], length: int, eps: float, samples: int,
                         seed: int) -> float:
    """The threshold of the recurrent cell (state (a, b), initial state 0) with every weight off by eps.

    Input weights as in the static form but with a random sign where the weight is 0: 1 − eps in the state's subset,
    ±eps elsewhere; recurrent weights 1 − eps on the state's own previous value and ±eps on the other's; each sign
    drawn independently per sequence, so the threshold is the MSE expected over sign patterns. Why not the static
    form's +eps everywhere: R = [[1 − eps, eps], [eps, 1 − eps]] keeps a + b exactly (its columns sum to 1) while
    a − b decays by (1 − 2·eps) per step, so at 1000 steps of U[−1, 1] the add threshold (8·10⁻⁷) would sit five
    orders of magnitude below sub's (0.18): below what a float32 cell whose zero weights rest within 10⁻⁵ of 0 can
    reach (one cross weight of 10⁻⁵ alone costs an MSE of about 0.1 there).
    """
    op = OPERATIONS[operation][0]
    rng_range = Range(intervals)
    rng = np.random.Generator(np.random.PCG64(seed))
    mask = np.zeros((2, input_size))
    mask[0, a[0]:a[1]], mask[1, b[0]:b[1]] = 1, 1
    rows = max(1, min(samples, _CHUNK_VALUES // (64 * input_size)))
    total, done = 0.0, 0
    with np.errstate(all="ignore"):
        while done < samples:
            n = min(rows, samples - done)
            signs = rng.integers(0, 2, size=(n, 2, input_size + 2)) * 2.0 - 1.0
            w_in = np.where(mask > 0, 1 - eps, eps * signs[..., :input_size])  # (n, 2, in)
            w_rec = np.where(np.eye(2) > 0, 1 - eps, eps * signs[..., input_size:])  # (n, 2, 2): h_t = R h + W x
            h, ab = np.zeros((n, 2)), np.zeros((n, 2))
            for t0 in range(0, length, 64):  # 64 steps of inputs at a time, drawn in the same order every run
                x = rng_range.transform(rng.random((n, min(64, length - t0), input_size)))
                u, ab = np.einsum("ntk,nik->nti", x, w_in), ab + np.einsum("ntk,ik->ni", x, mask)
                for k in range(x.shape[1]):
                    h = np.einsum("nij,nj->ni", w_rec, h) + u[:, k]
            total += float(np.sum((op(h[:, 0], h[:, 1]) - op(ab[:, 0], ab[:, 1])) ** 2))
            done += n
    return total / samples


def _key(operation, input_size, a, b, intervals, length, eps, samples, seed, recurrent=False) -> str:
    rng = ":".join(f"{lo!r},{hi!r}" for lo, hi in intervals)
    return (f"op={operation};input_size={input_size};a={a[0]}:{a[1]};b={b[0]}:{b[1]};range={rng};"
            f"length={length};eps={eps!r};samples={samples};seed={seed}" + (";cell=recurrent" if recurrent else ""))


def success_threshold(config: ArithmeticConfig, eps: float = 1e-5, samples: int = 1_000_000, seed: int = 0, *,
                      recurrent: bool = False, cache_path: str | os.PathLike | None = None) -> float:
    """MSE on the extrapolation range of a "nearly perfect" solution (Madsen & Johansen 2020, §4.1 and appendix).

    Definition (the one of their reference script, ``export/function_task_static_mse_expectation.r``): only the
    first layer is perturbed; the weight of every input in a subset becomes 1 − eps and the weight of every other
    input (all ``input_size`` of them, not only the other subset) becomes eps; the output op is exact. So
    a' = (1 − eps)·a + eps·(S − a), b' = (1 − eps)·b + eps·(S − b) with S the sum of all inputs, and the threshold
    is E[(op(a', b') − op(a, b))²] with x ~ U(extrapolation_range) i.i.d., estimated from ``samples`` rows in
    float64 (PCG64(seed), fixed-size chunks: deterministic). With ``recurrent`` the near-perfect solution is the
    recurrent cell's over ``config.test_length`` steps of ``input_size`` inputs: its input and recurrent weights
    each off by eps, the zero weights with random signs (see :func:`_recurrent_threshold`, which says why); the
    output op is exact. Cost grows with test_length × samples.

    Our subsets are those of the dataset (default 25 wide, sharing 12). The published thresholds come from the same
    definition evaluated on 26-wide subsets sharing 13 (R's inclusive ``a.start:a.end``); ``subsets="0:26,13:39"``
    reproduces all six of them to within 0.5 %, the default gives add +8.5 %, div +18 %, root +13 %, the others < 0.5 %.

    Cached in memory per (operation, input_size, subsets, extrapolation range, length, eps, samples, seed) and, with
    ``cache_path``, in a JSON file mapping a canonical key string to the value (written atomically).
    """
    a, b = _subsets(config)
    length = config.test_length if recurrent else 1
    args = (config.operation, config.input_size, a, b, Range.parse(config.extrapolation_range).intervals,
            length, float(eps), int(samples), int(seed))
    compute = _recurrent_threshold if recurrent else _threshold
    if cache_path is None:
        return compute(*args)
    key = _key(*args, recurrent=recurrent)
    stored = _read_json(cache_path)
    if key in stored:
        return float(stored[key])
    value = compute(*args)
    stored = _read_json(cache_path)  # re-read just before writing, to keep entries others added meanwhile
    stored[key] = value
    directory = os.path.dirname(os.path.abspath(cache_path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".threshold-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(stored, f, indent=1, sort_keys=True)
        os.replace(tmp, cache_path)
    except BaseException:
        os.unlink(tmp)
        raise
    return value


def _cache_clear() -> None:
    _threshold.cache_clear()
    _recurrent_threshold.cache_clear()


success_threshold.cache_info = _threshold.cache_info  # type: ignore[attr-defined]
success_threshold.cache_clear = _cache_clear  # type: ignore[attr-defined]


def _read_json(path) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


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
