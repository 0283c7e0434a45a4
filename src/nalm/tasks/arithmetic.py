"""The arithmetic task of Trask et al. (2018, §4.1) in the form of Madsen & Johansen (2020, §4.1).

An input vector x of ``input_size`` values is drawn uniformly from a range; a is the sum of one subset of x, b the
sum of another (overlapping) subset; the target is op(a, b). With the defaults (100 inputs, subset ratio 0.25,
overlap ratio 0.5) each subset holds 25 consecutive inputs and the two share 12: subset 1 is x[o : o+25], subset 2
is x[o+13 : o+38], with the offset o drawn per seed. Training and validation draw from the interpolation range
U[1, 2], the test set from the extrapolation range U[2, 6].

Worked example (input_size=4, subsets "0:2,0:4", op mul): x = (1.5, 1.2, 1.9, 1.1) gives
a = 1.5 + 1.2 = 2.7, b = 1.5 + 1.2 + 1.9 + 1.1 = 5.7 and the target a·b = 15.39.

The recurrent form feeds the same input over time steps: x_t of ``input_size`` values per step, with a and b
summed over the whole sequence; training sequences are short, test sequences long, so a and b (and the target)
grow far beyond anything seen in training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError
from ..functional import matmul
from ..ranges import Range, uniform_1_2
from .base import Task, evaluation_generator, seed_generators


def _safe_root(a):
    return np.sqrt(a) if isinstance(a, np.ndarray) else torch.sqrt(a)


#: op name -> (function of a and b, whether it needs b, a short formula)
OPERATIONS: dict[str, tuple[Callable, bool, str]] = {
    "add": (lambda a, b: a + b, True, "a + b"),
    "sub": (lambda a, b: a - b, True, "a - b"),
    "mul": (lambda a, b: a * b, True, "a × b"),
    "div": (lambda a, b: a / b, True, "a / b"),
    "squared": (lambda a, b: a * a, False, "a²"),
    "root": (lambda a, b: _safe_root(a), False, "√a"),
}


def parse_subsets(value: str | Sequence | None) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """Parse fixed subsets "start:stop,start:stop" (Python slices) or return None for the random default."""
    if value is None or isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], tuple):
        return value
    try:
        if isinstance(value, str):
            pairs = [tuple(int(v) for v in part.split(":")) for part in value.split(",")]
        else:
            pairs = [tuple(int(v) for v in p) for p in value]
        if len(pairs) != 2 or any(len(p) != 2 for p in pairs):
            raise ValueError
    except ValueError:
        raise ConfigError(f"cannot parse subsets {value!r}: expected 'start:stop,start:stop' (e.g. '0:2,0:4')") from None
    return tuple(pairs)  # type: ignore[return-value]


def _help(text: str, **more) -> dict:
    return {"help": text, **more}


@dataclass(frozen=True)
class ArithmeticConfig:
    """The data of the static arithmetic task and the width of the model; every field is a CLI option.
    Defaults: Madsen & Johansen (2020)."""

    operation: str = field(default="add", metadata=_help("target operation", choices=tuple(OPERATIONS),
                                                          flags=("--op",)))
    input_size: int = field(default=100, metadata=_help("number of inputs (per time step in the recurrent form)"))
    subset_ratio: float = field(default=0.25, metadata=_help("size of each subset as a share of the inputs"))
    overlap_ratio: float = field(default=0.5, metadata=_help("share of a subset the two subsets share"))
    interpolation_range: str = field(default="1,2", metadata=_help(
        "training/validation range, e.g. 1,2 or -2,-1:1,2; write --interpolation-range=-2,-1 for a negative one"))
    extrapolation_range: str = field(default="2,6", metadata=_help("test range"))
    #: Fixed subsets "start:stop,start:stop" instead of the random per-seed offset (e.g. "0:2,0:4").
    subsets: str | None = field(default=None, metadata=_help(
        "fixed subsets as Python slices, e.g. 0:2,0:4 for t = (x1+x2)(x1+x2+x3+x4)"))
    evaluation_size: int = field(default=10_000, metadata=_help("rows of each fixed evaluation set"))
    #: The model's hidden width (between the two units, or the state of a recurrent baseline).
    hidden_size: int = field(default=2, metadata=_help("width of the hidden layer"))

    def __post_init__(self) -> None:
        if self.operation not in OPERATIONS:
            raise ConfigError(f"unknown operation {self.operation!r}; choose from: {', '.join(OPERATIONS)}")
        for name in ("input_size", "evaluation_size", "hidden_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if not 0 < self.subset_ratio <= 1:
            raise ConfigError(f"subset_ratio must be in (0, 1], got {self.subset_ratio!r}")
        if not 0 <= self.overlap_ratio < 1:
            raise ConfigError(f"overlap_ratio must be in [0, 1), got {self.overlap_ratio!r}")
        interp, extrap = Range.parse(self.interpolation_range), Range.parse(self.extrapolation_range)
        if self.fixed_subsets is not None:
            for start, stop in self.fixed_subsets:
                if not 0 <= start < stop <= self.input_size:
                    raise ConfigError(f"subset {start}:{stop} must lie inside the {self.input_size} inputs")
        span = self.span
        if span > self.input_size:
            raise ConfigError(f"the two subsets span {span} inputs but input_size is {self.input_size}: lower "
                              f"subset_ratio or overlap_ratio, or raise input_size")
        if self.subset_size < 1:
            raise ConfigError(f"subset_ratio {self.subset_ratio} of input_size {self.input_size} leaves an empty subset")
        if self.operation == "root" and (interp.low < 0 or extrap.low < 0):
            raise ConfigError("operation 'root' needs non-negative ranges (√a of a negative sum is undefined); "
                              f"got interpolation {interp}, extrapolation {extrap}")

    #: Time steps of training/validation and of the test set: 1 in the static form.
    train_length = 1
    test_length = 1


    @property
    def fixed_subsets(self):
        return parse_subsets(self.subsets)

    @property
    def subset_size(self) -> int:
        return int(self.input_size * self.subset_ratio)

    @property
    def overlap_size(self) -> int:
        return int(self.subset_size * self.overlap_ratio)

    @property
    def span(self) -> int:
        """How many consecutive inputs the two subsets cover together."""
        if self.fixed_subsets is not None:
            return max(stop for _, stop in self.fixed_subsets)
        return 2 * self.subset_size - self.overlap_size

    def masks(self, seeds: Sequence[int]) -> np.ndarray:
        """The subset masks, (S, 2, input_size) float32: row 0 selects a, row 1 selects b."""
        masks = np.zeros((len(seeds), 2, self.input_size), dtype=np.float32)
        if self.fixed_subsets is not None:
            for k, (start, stop) in enumerate(self.fixed_subsets):
                masks[:, k, start:stop] = 1
            return masks
        size, shift = self.subset_size, self.subset_size - self.overlap_size
        for i, rng in enumerate(seed_generators(seeds, "subsets")):
            o = int(rng.integers(0, self.input_size - self.span + 1))
            masks[i, 0, o:o + size] = 1
            masks[i, 1, o + shift:o + shift + size] = 1
        return masks


@dataclass(frozen=True)
class RecurrentArithmeticConfig(ArithmeticConfig):
    """The recurrent form (ours; the paper gives none): ``input_size`` inputs per time step, a and b summed over the
    whole sequence; train and interpolate on ``train_length`` steps, extrapolate on ``test_length`` steps."""

    input_size: int = field(default=10, metadata=_help("number of inputs per time step"))
    extrapolation_range: str = field(default="1,2", metadata=_help("test range (the test sequences are longer)"))
    train_length: int = field(default=10, metadata=_help("time steps in training and interpolation"))
    test_length: int = field(default=100, metadata=_help("time steps in extrapolation"))

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("train_length", "test_length"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")

class ArithmeticTask(Task):
    """Static (``recurrent=False``, input (S, B, input_size)) or recurrent (input (S, B, T, input_size)) task."""

    def __init__(self, config: ArithmeticConfig, seeds: Sequence[int], *, evaluation_seed: int = 0,
                 recurrent: bool = False):
        self.config = config
        self.recurrent = recurrent
        self.name = "arithmetic-recurrent" if recurrent else "arithmetic"
        self.input_size = config.input_size
        self.output_size = 1
        self.evaluation_seed = evaluation_seed  # the fixed sets' own stream, apart from every model seed
        self.seeds = list(seeds)
        self.op, _, self.formula = OPERATIONS[config.operation]
        self.interpolation = Range.parse(config.interpolation_range)
        self.extrapolation = Range.parse(config.extrapolation_range)
        self._masks = torch.from_numpy(config.masks(self.seeds))  # (S, 2, in)

    def targets(self, x: Tensor) -> Tensor:
        """op(a, b) per seed: x (S or 1, N, [T,] in) -> (S, N, 1); sums run over time steps too."""
        if self.recurrent:
            x = x.sum(dim=-2)
        ab = matmul(x, self._masks.to(x.dtype).transpose(-1, -2))  # (S, N, 2)
        return self.op(ab[..., 0:1], ab[..., 1:2])

    def _shape(self, batch: int, length: int) -> tuple[int, ...]:
        return (batch, length, self.input_size) if self.recurrent else (batch, self.input_size)

    def sample(self, bitgens, batch_size, buffer=None):
        """Training batch from the interpolation range: x (S, B, [T,] in), y (S, B, 1)."""
        u, buffer = uniform_1_2(bitgens, self._shape(batch_size, self.config.train_length), buffer)
        x = torch.from_numpy(self.interpolation.transform(u, base=1.0))
        return x, self.targets(x), buffer

    def evaluation_sets(self, seeds=None):
        n, cfg = self.config.evaluation_size, self.config
        sets = {}
        for k, (name, rng_range, length) in enumerate((("interpolation", self.interpolation, cfg.train_length),
                                                       ("extrapolation", self.extrapolation, cfg.test_length))):
            rng = evaluation_generator(self.evaluation_seed, k)
            # One fixed set shared by all seeds (their targets differ through their subsets): (1, N, [T,] in).
            x = torch.from_numpy(rng_range.sample(rng, (1,) + self._shape(n, length)))
            sets[name] = (x, self.targets(x))
        return sets
