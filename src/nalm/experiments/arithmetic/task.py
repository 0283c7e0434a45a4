"""The arithmetic task of Trask et al. (2018, §4.1) in the form of Madsen & Johansen (2020, §4.1).

An input vector x of ``input_size`` values is drawn uniformly from a range; a is the sum of one subset of x, b the
sum of another (overlapping) subset; the target is op(a, b). With the defaults (100 inputs, subset ratio 0.25,
overlap ratio 0.5) each subset holds 25 consecutive inputs and the two share 12: subset 1 is x[o : o+25], subset 2
is x[o+13 : o+38], with the offset o drawn per seed. Training and validation draw from the interpolation range
U[1, 2], the test set from the extrapolation range U[2, 6].

Worked example (input_size=4, subsets "0:2,0:4", op mul): x = (1.5, 1.2, 1.9, 1.1) gives
a = 1.5 + 1.2 = 2.7, b = 1.5 + 1.2 + 1.9 + 1.1 = 5.7 and the target a·b = 15.39.

The recurrent form (ours; the paper does not give its setup) feeds the input over time steps: x_t of
``input_size`` values per step; a_t and b_t are the two subsets' sums over steps 1..t and the running target is
op(a_t, b_t). The default trains on the running target of every step of 1..10-step sequences of U[−1, 1] and tests
the final target of 1000-step sequences (and of their first 100 steps): a and b grow far beyond the training range.
Why this form: with only the final sum of 10 steps of U[1, 2] as the target (the earlier form), that sum barely
varies (mean 60, variance 5 for a + b) and a cell that learns its scale scores about as well as one that learns
which inputs make it. The running target of every step asks for a recurrent weight of 1 (the target grows with t),
and zero-centred inputs leave the sums' variance, not their mean, as the signal that picks the inputs. Measured
with the NAU cell on a + b (10 seeds × 10⁴ steps, loss on every step): normalised extrapolation error at 1000 steps
2·10⁻⁴ on U[−1, 1] against 5.4 on U[1, 2] and 6.8 on U[0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from nalm.engine.ranges import Range, uniform_1_2
from nalm.engine.task import Task, evaluation_generator, seed_generators
from nalm.errors import ConfigError
from nalm.functional import matmul
from nalm.nn.models import parse_options


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
    unit_options: str = field(default="", metadata=_help(
        "options of both units of a UNIT-UNIT model, key=value,... (e.g. gate=fixed,gate_value=0.99 for nalu-nalu: "
        "a controlled run's frozen gate)", added=True))

    def __post_init__(self) -> None:
        if self.operation not in OPERATIONS:
            raise ConfigError(f"unknown operation {self.operation!r}; choose from: {', '.join(OPERATIONS)}")
        parse_options(self.unit_options)
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


class ArithmeticTask(Task):
    """Static (``recurrent=False``, input (S, B, input_size)) or, as the base of :class:`RecurrentArithmeticTask`,
    recurrent (input (S, B, T, input_size), the sums over the whole sequence as the only target)."""

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


LOSS_STEPS = ("all", "last")


@dataclass(frozen=True)
class RecurrentArithmeticConfig(ArithmeticConfig):
    """The recurrent form (ours; the paper gives none): ``input_size`` inputs per step, a_t and b_t the subsets'
    sums over steps 1..t, the running target op(a_t, b_t).

    Training sequences have ``train_length`` steps; the loss counts the running targets of steps
    ``min_train_length``..``train_length``: every one of them (``loss_steps="all"``, the form of Madsen & Johansen's
    sequential MNIST task), or one per sequence (``"last"``): the last step of a sequence whose length is drawn per
    row from min_train_length..train_length (a causal model's output at step L is its output for the first L steps,
    so this is training on varying lengths). ``loss_steps="last"``, ``min_train_length=train_length`` and the
    range 1,2 give the earlier form, whose final sum barely varies. The interpolation set is the final target of
    ``train_length`` steps, the extrapolation set that of ``test_length`` steps (and of its first
    ``short_test_length`` steps), from ``extrapolation_range``.

    Defaults: 10 inputs per step, a and b over 4 inputs each sharing 2 (ratio 0.4, overlap 0.5), U[−1, 1] for
    training and testing, loss on every step of 1..10-step sequences, tests at 1000 and 100 steps (1000 is the
    sequence length Madsen & Johansen test at), 1,000 evaluation rows.
    """

    input_size: int = field(default=10, metadata=_help("number of inputs per time step"))
    subset_ratio: float = field(default=0.4, metadata=_help("size of each subset as a share of the inputs"))
    interpolation_range: str = field(default="-1,1", metadata=_help(
        "training/interpolation range of every input, e.g. -1,1 or 1,2; write --interpolation-range=-1,1"))
    extrapolation_range: str = field(default="-1,1", metadata=_help(
        "range of the test inputs (the test sequences are longer); write --extrapolation-range=-1,1"))
    evaluation_size: int = field(default=1_000, metadata=_help("rows of each fixed evaluation set"))
    train_length: int = field(default=10, metadata=_help("time steps of a training sequence"))
    min_train_length: int = field(default=1, metadata=_help(
        "first step whose running target the loss counts (all) or shortest training length (last)"))
    loss_steps: str = field(default="all", metadata=_help(
        "all: the loss on every step's running target; last: on the last step of each sequence only",
        choices=LOSS_STEPS))
    test_length: int = field(default=1000, metadata=_help("time steps of the extrapolation sequences"))
    short_test_length: int = field(default=100, metadata=_help(
        "a second, shorter test length (the prefix of the extrapolation sequences); 0, or not below test_length: "
        "none"))

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("train_length", "min_train_length", "test_length", "short_test_length"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < (0 if name == "short_test_length" else 1):
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if self.min_train_length > self.train_length:
            raise ConfigError(f"min_train_length {self.min_train_length} exceeds train_length {self.train_length}")
        if self.loss_steps not in LOSS_STEPS:
            raise ConfigError(f"unknown loss_steps {self.loss_steps!r}; choose from: {', '.join(LOSS_STEPS)}")

    @property
    def short_length(self) -> int:
        """The short test length in use: short_test_length when it is below test_length, else 0 (none)."""
        return self.short_test_length if self.short_test_length < self.test_length else 0


class RecurrentArithmeticTask(ArithmeticTask):
    """The recurrent task: x (S, B, T, input_size); the model returns its output after every step, (S, B, T, 1).

    Metrics (per seed): ``interpolation_mse`` (final target of ``train_length`` steps), ``extrapolation_mse``
    (of ``test_length`` steps), ``extrapolation_short_mse`` (of the first ``short_test_length`` steps of the same
    sequences), ``mse_at_<L>`` for the lengths of :meth:`curve_lengths`, ``sparsity_error``. The model runs the
    long sequences in row chunks and keeps only the steps asked for.
    """

    #: A seed diverges when its training or interpolation error is not finite. Its output over 1000 steps may
    #: overflow while training is sound (a recurrent weight above 1 grows like 1.2^1000): that extrapolation error
    #: is +inf, a failure to extrapolate, not a divergence that should stop the seed.
    finite_metrics = ("interpolation_mse",)
    #: Rows × seeds per evaluation chunk: bounds the memory of one step's state (an LSTM's gates: 64 per row).
    chunk_rows = 200_000

    def __init__(self, config: RecurrentArithmeticConfig, seeds: Sequence[int], *, evaluation_seed: int = 0):
        super().__init__(config, seeds, evaluation_seed=evaluation_seed, recurrent=True)
        self.varying = config.loss_steps == "last" and config.min_train_length < config.train_length
        self.first_step = (config.train_length if config.loss_steps == "last" else config.min_train_length) - 1

    def running_targets(self, x: Tensor) -> Tensor:
        """op(a_t, b_t) at every step: x (S or 1, N, T, in) -> (S, N, T, 1), in x's dtype."""
        ab = matmul(x.cumsum(dim=-2), self._masks.to(x.dtype).transpose(-1, -2).unsqueeze(1))  # (S, N, T, 2)
        return self.op(ab[..., 0:1], ab[..., 1:2])

    def final_targets(self, x: Tensor, length: int) -> Tensor:
        """op(a, b) of the first ``length`` steps, in float64: x (S or 1, N, T, in) -> (S, N, 1)."""
        ab = matmul(x[..., :length, :].double().sum(dim=-2), self._masks.double().transpose(-1, -2))
        return self.op(ab[..., 0:1], ab[..., 1:2])

    def sample(self, bitgens, batch_size, buffer=None):
        """A training batch: x (S, B, T, in), y = (running targets (S, B, T, 1), per-step loss weights (S, B, T)
        or None when every counted step weighs the same)."""
        cfg = self.config
        u, buffer = uniform_1_2(bitgens, (batch_size, cfg.train_length, self.input_size), buffer)
        x = torch.from_numpy(self.interpolation.transform(u, base=1.0))
        weights = None
        if self.varying:  # per row, the last step of a sequence of length L ~ U{min..T}, from the seed's stream
            lengths = np.stack([np.random.Generator(g).integers(cfg.min_train_length, cfg.train_length + 1,
                                                                size=batch_size) for g in bitgens])
            weights = torch.from_numpy(np.arange(1, cfg.train_length + 1) == lengths[..., None]).float()
        return x, (self.running_targets(x), weights), buffer

    def loss(self, output, y) -> Tensor:
        """Per seed: the mean squared error over the counted steps (all from min_train_length, or one per row)."""
        target, weights = y
        err = (output - target).pow(2).squeeze(-1)  # (S, B, T)
        if weights is None:
            return err[..., self.first_step:].flatten(1).mean(dim=1)
        return (err * weights).flatten(1).sum(dim=1) / weights.flatten(1).sum(dim=1)

    def evaluation_sets(self, seeds=None):
        """Fixed sets shared by every seed: interpolation (train_length steps) and extrapolation (test_length
        steps), x (1, N, T, in) float32; their final targets per seed (S, N, 1) float64."""
        cfg, sets = self.config, {}
        for k, (name, rng_range, length) in enumerate((("interpolation", self.interpolation, cfg.train_length),
                                                       ("extrapolation", self.extrapolation, cfg.test_length))):
            x = torch.from_numpy(rng_range.sample(evaluation_generator(self.evaluation_seed, k),
                                                  (1, cfg.evaluation_size, length, self.input_size)))
            sets[name] = (x, self.final_targets(x, length))
        return sets

    @torch.no_grad()
    def predict(self, model, x: Tensor, steps: Sequence[int], num_seeds: int, device=None) -> Tensor:
        """The model's outputs after the 0-based ``steps``: x (1, N, T, in) -> (S, N, len(steps)) float64."""
        rows = max(1, self.chunk_rows // num_seeds)
        out = []
        for i in range(0, x.shape[1], rows):
            xc = x[:, i:i + rows].to(device)
            out.append(model(xc, steps=list(steps))[..., 0].double().cpu())  # xc is broadcast over the seeds
        return torch.cat(out, dim=1)

    def curve_lengths(self) -> list[int]:
        """The sequence lengths of the ``mse_at_<L>`` metrics: 1, 2, 5, 10, 20, ... up to test_length, with the
        short test length and test_length itself."""
        cfg, lengths, k = self.config, set(), 1
        while k <= cfg.test_length:
            lengths |= {m * k for m in (1, 2, 5) if m * k <= cfg.test_length}
            k *= 10
        return sorted(lengths | {cfg.test_length} | ({cfg.short_length} - {0}))

    def evaluate(self, model, num_seeds: int, device=None) -> dict[str, Tensor]:
        """Per seed: interpolation_mse, extrapolation_mse (test_length), extrapolation_short_mse (short length),
        ``mse_at_<L>`` at every length of :meth:`curve_lengths` (prefixes of the extrapolation sequences; one pass
        gives them all), sparsity_error, and the diagnostics of the cells and units on interpolation sequences."""
        from nalm.engine.diagnostics import collect
        from nalm.engine.metrics import sparsity

        cfg = self.config
        lengths = self.curve_lengths()
        if getattr(self, "_sets", None) is None:
            self._sets = self.evaluation_sets()
            x = self._sets["extrapolation"][0]
            self._curve_targets = [self.final_targets(x, L)[..., 0] for L in lengths]  # (S, N) each
        (xi, yi), (xe, _) = self._sets["interpolation"], self._sets["extrapolation"]
        metrics = {"interpolation_mse": (self.predict(model, xi, [cfg.train_length - 1], num_seeds, device)[..., 0]
                                         - yi[..., 0]).pow(2).mean(dim=1)}
        pred = self.predict(model, xe, [L - 1 for L in lengths], num_seeds, device)  # (S, N, len(lengths))
        for k, (L, y) in enumerate(zip(lengths, self._curve_targets)):  # an output that overflowed: error +inf
            metrics[f"mse_at_{L}"] = (pred[..., k] - y).pow(2).nan_to_num(nan=math.inf).mean(dim=1)
        metrics["extrapolation_mse"] = metrics[f"mse_at_{cfg.test_length}"]
        if cfg.short_length:
            metrics["extrapolation_short_mse"] = metrics[f"mse_at_{cfg.short_length}"]
        metrics["sparsity_error"] = sparsity(model, num_seeds)
        return {**metrics, **collect(model, xi, num_seeds, device=device)}
