"""The single-module arithmetic task of Mistry, Farrahi & Hare, "A Primer for Neural Arithmetic Logic Modules"
(JMLR 2022, §5): y = x₁ op x₂ from one layer of one unit, on nine interpolation → extrapolation range pairs.

The seed axis carries (range, seed) *slots*: slot (r, s) is model seed s on range r, with its own stream id
(:func:`stream_id`), so one configuration trains any subset of the nine ranges together and a slot draws the same
numbers whatever trains beside it. Its training data come from its own stream, its validation and test sets are its
range's (drawn from the range's index alone), its success threshold is its range's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from nalm.engine.metrics import evaluate as evaluate_mse
from nalm.engine.metrics import sparsity
from nalm.engine.ranges import Range, uniform_1_2
from nalm.engine.task import Task, evaluation_generator
from nalm.errors import ConfigError

#: The nine (interpolation, extrapolation) range pairs of the Primer (Table 3), in its order.
RANGES: tuple[tuple[str, str], ...] = (
    ("-20,-10", "-40,-20"), ("-2,-1", "-6,-2"), ("-1.2,-1.1", "-6.1,-1.2"), ("-0.2,-0.1", "-2,-0.2"),
    ("-2,2", "-6,-2:2,6"), ("0.1,0.2", "0.2,2"), ("1,2", "2,6"), ("1.1,1.2", "1.2,6"), ("10,20", "20,40"))

OPERATIONS = {"add": (lambda a, b: a + b, "+"), "sub": (lambda a, b: a - b, "−"),
              "mul": (lambda a, b: a * b, "×"), "div": (lambda a, b: a / b, "÷")}


def range_label(index: int) -> str:
    """``U[1,2) → U[2,6)``: a range pair as the Primer writes it."""
    def text(r: str) -> str:
        return " ∪ ".join(f"U[{lo:g},{hi:g})" for lo, hi in Range.parse(r).intervals)

    train, test = RANGES[index]
    return f"{text(train)} → {text(test)}"


def stream_id(range_index: int, seed: int) -> int:
    """The stream id of slot (range, seed): seed + range · 2³². Seeds stay below 2³² (as everywhere in nalm), so
    ids never collide; range 0's ids are the plain seeds."""
    return int(seed) + (int(range_index) << 32)


def parse_ranges(text: str) -> tuple[int, ...]:
    """``"all"`` or comma-separated range indices 0..8 (e.g. ``"4,6"``), sorted, without repeats."""
    if str(text).strip() == "all":
        return tuple(range(len(RANGES)))
    try:
        indices = sorted({int(v) for v in str(text).split(",")})
    except ValueError:
        raise ConfigError(f"cannot parse ranges {text!r}: 'all' or indices 0..{len(RANGES) - 1}, e.g. '4,6'") from None
    if not indices or indices[0] < 0 or indices[-1] >= len(RANGES):
        raise ConfigError(f"range indices must lie in 0..{len(RANGES) - 1}, got {text!r}")
    return tuple(indices)


def _help(text: str, **more) -> dict:
    return {"help": text, **more}


@dataclass(frozen=True)
class SingleModuleConfig:
    """The task's options; defaults: the Primer's protocol (two inputs, all nine ranges, 10⁴ evaluation rows)."""

    operation: str = field(default="add", metadata=_help("x₁ op x₂", choices=tuple(OPERATIONS), flags=("--op",)))
    ranges: str = field(default="all", metadata=_help(
        "'all' or range indices 0..8 (comma-separated), of the Primer's order: " + "; ".join(
            f"{i}: {range_label(i)}" for i in range(len(RANGES)))))
    input_size: int = field(default=2, metadata=_help(
        "inputs per row; inputs 0 and 1 are the operands, the rest are distractors (10: the division paper's "
        "input redundancy)"))
    evaluation_size: int = field(default=10_000, metadata=_help("rows of each range's validation and test set"))
    eps: float = field(default=1e-5, metadata=_help("ε of the perturbed exact solution behind the threshold"))

    def __post_init__(self) -> None:
        if self.operation not in OPERATIONS:
            raise ConfigError(f"unknown operation {self.operation!r}; choose from: {', '.join(OPERATIONS)}")
        for name, low in (("input_size", 2), ("evaluation_size", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {v!r}")
        if not 0 < self.eps < 0.5:
            raise ConfigError(f"eps must lie in (0, 0.5), got {self.eps!r}")
        parse_ranges(self.ranges)

    @property
    def range_indices(self) -> tuple[int, ...]:
        return parse_ranges(self.ranges)


def perturbed(operation: str, x: np.ndarray, eps: float) -> np.ndarray:
    """The ε-perturbed exact module on rows ``x`` (N, in): every weight of the exact solution off by ε towards
    error, the op exact. + and −: weights ±(1 − ε) on the operands and ε on every other input,
    y' = (1 − ε)(x₀ ± x₁) + ε·Σ_{k≥2} x_k; × and ÷: the same exponents in log space,
    y' = op(sgn x₀ |x₀|^{1−ε}, sgn x₁ |x₁|^{1−ε}) · ∏_{k≥2} |x_k|^ε (a weight-perturbed multiplicative unit, to
    first order in ε whatever its form)."""
    op = OPERATIONS[operation][0]
    if operation in ("add", "sub"):
        return (1 - eps) * op(x[:, 0], x[:, 1]) + eps * x[:, 2:].sum(axis=1)
    a, b = (np.sign(x[:, k]) * np.abs(x[:, k]) ** (1 - eps) for k in (0, 1))
    return op(a, b) * np.prod(np.abs(x[:, 2:]) ** eps, axis=1)


@lru_cache(maxsize=None)
def success_threshold(operation: str, range_index: int, input_size: int = 2, eps: float = 1e-5,
                      samples: int = 1_000_000, seed: int = 0) -> float:
    """The MSE on range ``range_index``'s test range of the ε-perturbed exact module (:func:`perturbed`; Madsen &
    Johansen 2020, §4.1: a seed succeeds when its test MSE is below it): E[(y' − op(x₀, x₁))²] by Monte Carlo over
    ``samples`` float64 rows (PCG64(seed), fixed chunks: deterministic).

    Why the module's own weights and not the arithmetic experiment's hidden sums (a' = (1 − ε)·x₀ + ε·x₁, op exact):
    with one input per operand, a' + b' = x₀ + x₁ exactly, so on + the threshold would be 0 and only a unit whose
    weights land on 1 to the last bit could pass."""
    op = OPERATIONS[operation][0]
    test = Range.parse(RANGES[range_index][1])
    rng = np.random.Generator(np.random.PCG64(seed))
    rows = max(1, (1 << 21) // input_size)
    total, done = 0.0, 0
    with np.errstate(all="ignore"):
        while done < samples:
            n = min(rows, samples - done)
            x = test.transform(rng.random((n, input_size)))
            total += float(np.sum((perturbed(operation, x, eps) - op(x[:, 0], x[:, 1])) ** 2))
            done += n
    return total / samples


class SingleModuleTask(Task):
    """The data of slots ``(range index, seed)``: x (S, B, input_size), y = x₀ op x₁ (S, B, 1).

    Metrics per slot: ``interpolation_mse`` (validation, selects the best step), ``extrapolation_mse`` (test),
    ``extrapolation_ratio`` (test MSE over the slot's range threshold: success when < 1) and ``sparsity_error``.
    """

    name = "single-module"
    output_size = 1
    success_metric = "extrapolation_ratio"
    threshold = 1.0

    def __init__(self, config: SingleModuleConfig, slots: Sequence[tuple[int, int]], *, evaluation_seed: int = 0):
        if not slots:
            raise ConfigError("single-module needs at least one (range, seed) slot")
        self.config, self.slots = config, list(slots)
        self.input_size = config.input_size
        self.op = OPERATIONS[config.operation][0]
        self.evaluation_seed = evaluation_seed
        index = [r for r, _ in self.slots]
        # Every training range is one interval [lo, hi): x = lo + (u − 1)(hi − lo) from u ∈ [1, 2), per slot.
        train = [Range.parse(RANGES[r][0]).intervals[0] for r in index]
        self._scale = np.array([hi - lo for lo, hi in train], dtype=np.float32)[:, None, None]
        self._offset = np.array([lo for lo, _ in train], dtype=np.float32)[:, None, None] - self._scale
        self._range_of_slot = torch.tensor(index)
        self.thresholds = torch.tensor([success_threshold(config.operation, r, config.input_size, config.eps)
                                        for r in index], dtype=torch.float64)
        self._sets = None

    def targets(self, x: Tensor) -> Tensor:
        return self.op(x[..., 0:1], x[..., 1:2])

    def sample(self, bitgens, batch_size, buffer=None):
        u, buffer = uniform_1_2(bitgens, (batch_size, self.input_size), buffer)
        x = torch.from_numpy(u * self._scale + self._offset)  # (S, B, in), slot i from bitgens[i] alone
        return x, self.targets(x), buffer

    def range_sets(self, range_index: int) -> dict[str, Tensor]:
        """Range ``range_index``'s validation ("interpolation") and test ("extrapolation") inputs, (N, in):
        drawn from the range's index alone, so every slot of a range sees the same rows."""
        out = {}
        for k, split in enumerate(("interpolation", "extrapolation")):
            rng = evaluation_generator(self.evaluation_seed, 2 * range_index + k)
            r = Range.parse(RANGES[range_index][k])
            out[split] = torch.from_numpy(r.sample(rng, (self.config.evaluation_size, self.input_size)))
        return out

    def evaluation_sets(self, seeds=None) -> dict[str, tuple[Tensor, Tensor]]:
        """Each slot's range's sets, stacked over the slots: x (S, N, in), y (S, N, 1)."""
        per_range = {r: self.range_sets(r) for r in sorted(set(self._range_of_slot.tolist()))}
        out = {}
        for split in ("interpolation", "extrapolation"):
            x = torch.stack([per_range[int(r)][split] for r in self._range_of_slot])
            out[split] = (x, self.targets(x))
        return out

    def evaluate(self, model, num_seeds: int, device=None) -> dict[str, Tensor]:
        if self._sets is None:
            self._sets = self.evaluation_sets()
        metrics = {f"{name}_mse": evaluate_mse(model, x, y, num_seeds, device=device)
                   for name, (x, y) in self._sets.items()}
        metrics["extrapolation_ratio"] = metrics["extrapolation_mse"] / self.thresholds
        metrics["sparsity_error"] = sparsity(model, num_seeds)
        return metrics
