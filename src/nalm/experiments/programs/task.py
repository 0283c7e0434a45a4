"""Program evaluation (Trask et al. 2018, §4.4: Fig. 4 and supplementary Fig. 6).

Small programs in the spirit of Learning to Execute (Zaremba & Sutskever 2014, arXiv 1410.4615) are generated as
syntax trees, evaluated by the interpreter here (never by Python: nothing generated reaches ``eval``, ``exec``,
``compile`` or a subprocess), rendered as Python for people, and encoded for a sequence model one token per step
with numbers fed whole (the NALU paper's change to the task).

Two kinds:

- ``add`` (supplementary Fig. 6): ``print((a + b))``.
- ``eval`` (Fig. 4): ``nesting`` operations composed as in Learning to Execute: each operation takes the previous
  one's expression as one of its operands (at a random position) and draws the others as fresh literals. The
  operations are ``pair`` ``(a ± b)``, ``vars`` ``v = a`` then ``(v ± b)``, ``ifstat`` ``(c if a > b else d)``
  (or ``<``), ``smallmul`` ``(a * k)`` / ``(k * a)`` with k in [1, mul_max], ``loop`` ``v = a`` then
  ``for x in range(L): v ±= b`` with L in [1, loop_max], and ``equality`` (the operand itself). Fig. 4 uses the
  default: pair, vars and ifstat (assignments, if-statements, + and −).

Literals are uniform integers in [low, high): training [0, 100), tests [100, 1000) and [1000, 10000).

Worked example (eval, nesting 2, a vars then a pair operation)::

    b = 12
    print((7 - (b + 40)))          value -45

Its tokens, one per time step, are the rendering's Python tokens with ``;`` for a line break:
``b = <num:12> ; print ( ( <num:7> - ( b + <num:40> ) ) )`` (16 steps).

Encoding. The vocabulary (:data:`VOCABULARY`, V = 31, in channel order) is ``<pad> <num> + - * = += -= < > ( )
if else for in range : print ; x a b c d e f g h i j``: padding, any number, the operators, keywords and
punctuation, ``;`` (end of a statement), the loop counter ``x`` and the ten variable names. A step is the one-hot
of its token followed by one value channel (:data:`VALUE_CHANNEL` = 31): the number times ``value_scale`` on a
``<num>`` step, 0 on every other step; a step is V + 1 = 32 floats (:data:`FEATURES`). A batch is left-padded with
``<pad>`` steps (channel :data:`PAD_CHANNEL` = 0, value 0) to its longest program, so that every program's last
real token is the batch's final step; the models of :mod:`nalm.experiments.programs.models`, built with
``pad_channel=PAD_CHANNEL``, skip pad steps (their state passes through unchanged), so a program's prediction does
not depend on the other programs in its batch. The regression target is the program's value times
``value_scale``: a fixed linear map, which an additive NALU path carries through unchanged, so the unit still sees
whole numbers up to one scale (products are not scale-equivariant: (s·a)(s·k) = s·(s·a·k)). Divide predictions by
``value_scale`` before the metrics.

Metrics (per seed, (S, N) -> (S,), in :mod:`nalm.experiments.programs.metrics`, re-exported here):
:func:`digit_accuracy` (the paper's "% of digits correct", defined there), :func:`exact_match` and
:func:`mean_absolute_error`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from nalm.errors import ConfigError, ShapeError

from .language import (FEATURES, LOOP_VARIABLE, NUM_CHANNEL, PAD_CHANNEL, TOKEN_INDEX, VALUE_CHANNEL, VARIABLES,
                       VOCABULARY, Assign, BinOp, Expr, IfExp, Loop, Num, Program, Statement, Var, evaluate, render,
                       tokens)
from .metrics import digit_accuracy, exact_match, mean_absolute_error

__all__ = [
    "ProgramConfig", "Program", "Num", "Var", "BinOp", "IfExp", "Assign", "Loop",
    "generate", "generate_many", "evaluate", "render", "tokens", "encode", "encode_batch", "sample_batch",
    "program_set", "LOOP_VARIABLE", "VARIABLES", "digit_accuracy", "exact_match", "mean_absolute_error",
    "VOCABULARY", "TOKEN_INDEX", "FEATURES", "PAD_CHANNEL", "NUM_CHANNEL", "VALUE_CHANNEL",
]

# -- configuration ---------------------------------------------------------------------------------------------

KINDS = ("add", "eval")
OPERATIONS = ("pair", "vars", "ifstat", "smallmul", "loop", "equality")


@dataclass(frozen=True)
class ProgramConfig:
    """The distribution of programs. Defaults: Fig. 4's programs on the training range [0, 100).

    ``kind="add"`` draws two literals and ignores ``nesting``, ``operations``, ``loop_max`` and ``mul_max``.
    """

    kind: str = "eval"
    #: How many operations an ``eval`` program composes (the result of one is an operand of the next).
    nesting: int = 2
    #: Comma-separated operations an ``eval`` program draws from, uniformly: pair, vars, ifstat, smallmul, loop,
    #: equality. Fig. 4: assignments, if-statements, + and −.
    operations: str = "pair,vars,ifstat"
    #: Literals are uniform integers in [low, high).
    low: int = 0
    high: int = 100
    #: Loop counts L and small multipliers k are uniform in [1, loop_max] and [1, mul_max].
    loop_max: int = 4
    mul_max: int = 4

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown program kind {self.kind!r}; choose from: {', '.join(KINDS)}")
        if not isinstance(self.operations, str):
            raise ConfigError(f"operations must be a comma-separated string (e.g. 'pair,vars'), got "
                              f"{self.operations!r}")
        unknown = [op for op in self.operation_list if op not in OPERATIONS]
        if unknown or not self.operation_list:
            raise ConfigError(f"operations {self.operations!r}: expected a comma-separated non-empty subset of "
                              f"{', '.join(OPERATIONS)}")
        for name, low in (("nesting", 1), ("loop_max", 1), ("mul_max", 1), ("high", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.nesting > len(VARIABLES):
            raise ConfigError(f"nesting must be at most {len(VARIABLES)} (one variable name per operation), "
                              f"got {self.nesting}")
        if not isinstance(self.low, int) or isinstance(self.low, bool) or not 0 <= self.low < self.high:
            raise ConfigError(f"literal range [low, high) must satisfy 0 <= low < high, got [{self.low!r}, "
                              f"{self.high!r})")

    @property
    def operation_list(self) -> tuple[str, ...]:
        return tuple(op.strip() for op in self.operations.split(",") if op.strip())

    def with_range(self, low: int, high: int) -> "ProgramConfig":
        """The same programs with literals from [low, high) (e.g. a 4-digit test set: 1000, 10000)."""
        return replace(self, low=low, high=high)


# -- generation ------------------------------------------------------------------------------------------------


class _Composer:
    """Builds one program the Learning-to-Execute way: a pending expression is consumed as one operand of the
    next operation, at a random position among its operands.

    Every random choice reads the next of the program's pre-drawn uniforms ``u`` (one row of a single
    ``rng.random`` call per batch, so generating is a Python walk without per-choice calls into numpy).
    """

    def __init__(self, config: ProgramConfig, u: list[float]):
        self.config, self.u, self.i = config, u, 0
        self.statements: list[Statement] = []
        self.pending: Expr | None = None
        self.names = list(VARIABLES)

    def choice(self, n: int) -> int:
        """A uniform integer in [0, n)."""
        self.i += 1
        k = int(self.u[self.i - 1] * n)
        return k if k < n else n - 1  # u * n can round up to n when u is within 2⁻⁵³ of 1

    def literal(self) -> Num:
        return Num(self.config.low + self.choice(self.config.high - self.config.low))

    def operands(self, n: int) -> list[Expr]:
        out: list[Expr] = [self.literal() for _ in range(n - (self.pending is not None))]
        if self.pending is not None:
            out.insert(self.choice(n), self.pending)
            self.pending = None
        return out

    def sign(self) -> str:
        return "+-"[self.choice(2)]

    def name(self) -> str:
        return self.names.pop(self.choice(len(self.names)))

    def operation(self, name: str) -> Expr:
        if name == "pair":
            a, b = self.operands(2)
            return BinOp(self.sign(), a, b)
        if name == "vars":
            a, b = self.operands(2)
            v = self.name()
            self.statements.append(Assign(v, a))
            return BinOp(self.sign(), Var(v), b)
        if name == "ifstat":
            a, b, c, d = self.operands(4)
            return IfExp(c, a, "><"[self.choice(2)], b, d)
        if name == "smallmul":
            (a,) = self.operands(1)
            k = Num(1 + self.choice(self.config.mul_max))
            return BinOp("*", a, k) if self.choice(2) == 0 else BinOp("*", k, a)
        if name == "loop":
            a, b = self.operands(2)
            v = self.name()
            count = 1 + self.choice(self.config.loop_max)
            self.statements += [Assign(v, a), Loop(count, v, self.sign(), b)]
            return Var(v)
        (a,) = self.operands(1)  # equality
        return a


#: The most uniforms one operation reads (ifstat: 3 literals, a position, a comparison; plus its own choice).
_DRAWS_PER_OPERATION = 8


def _build(config: ProgramConfig, u: list[float]) -> Program:
    composer = _Composer(config, u)
    if config.kind == "add":
        return Program((), BinOp("+", composer.literal(), composer.literal()))
    ops = config.operation_list
    for _ in range(config.nesting):
        composer.pending = composer.operation(ops[composer.choice(len(ops))])
    return Program(tuple(composer.statements), composer.pending)


def generate_many(config: ProgramConfig, rng: np.random.Generator, count: int) -> list[Program]:
    """``count`` random programs of ``config``, drawn from ``rng`` alone (deterministic given its state)."""
    width = 2 if config.kind == "add" else config.nesting * _DRAWS_PER_OPERATION
    return [_build(config, row) for row in rng.random((count, width)).tolist()]


def generate(config: ProgramConfig, rng: np.random.Generator) -> Program:
    """One random program of ``config`` (the same as ``generate_many(config, rng, 1)[0]``)."""
    return generate_many(config, rng, 1)[0]


# -- encoding --------------------------------------------------------------------------------------------------


_ONE_HOT = np.eye(FEATURES)


def _steps(programs: Sequence[Program], T: int | None, value_scale: float, dtype) -> np.ndarray:
    steps = [tokens(p) for p in programs]
    longest = max((len(s) for s in steps), default=0)
    T = longest if T is None else T
    if T < longest:
        raise ShapeError(f"encode_batch: length={T} is shorter than the longest program ({longest} steps)")
    index = np.full((len(steps), T), PAD_CHANNEL, dtype=np.int64)
    value = np.zeros((len(steps), T), dtype=np.float64)
    for i, s in enumerate(steps):
        if s:
            toks, vals = zip(*s)
            index[i, T - len(s):] = [TOKEN_INDEX[t] for t in toks]
            value[i, T - len(s):] = vals
    x = _ONE_HOT.astype(dtype)[index]  # (B, T) -> (B, T, FEATURES); no token is the value channel
    x[..., VALUE_CHANNEL] = value * value_scale
    return x


def encode(program: Program, value_scale: float = 1.0, dtype=np.float32) -> np.ndarray:
    """One program as a (T, FEATURES) array: the token's one-hot, then value_scale × its number (0 if none)."""
    return _steps([program], None, value_scale, dtype)[0]


def encode_batch(programs: Sequence[Program], value_scale: float = 1.0, length: int | None = None,
                 dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Programs left-padded to ``length`` (default: the longest): x (B, T, FEATURES) and their values (B,) int64.

    Pad steps come first and are one-hot ``<pad>`` with value 0; every program's last token is at step T − 1.
    """
    return _steps(programs, length, value_scale, dtype), np.array([evaluate(p) for p in programs], dtype=np.int64)


def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    return torch.empty((), dtype=dtype).numpy().dtype


def _as_generator(rng) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.Generator(rng)


def sample_batch(config: ProgramConfig, rngs: Sequence, batch_size: int, *, value_scale: float = 1.0,
                 dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """A training batch per seed, seed i's programs drawn from ``rngs[i]`` alone (numpy Generators or bit
    generators): x (S, B, T, FEATURES), y = value_scale × value (S, B, 1). T is the longest program in the batch."""
    programs = [generate_many(config, _as_generator(r), batch_size) for r in rngs]
    flat = [p for ps in programs for p in ps]
    x, values = encode_batch(flat, value_scale, dtype=_numpy_dtype(dtype))
    S = len(programs)
    y = torch.from_numpy(values.astype(np.float64) * value_scale).to(dtype).view(S, batch_size, 1)
    return torch.from_numpy(x).view((S, batch_size) + x.shape[1:]), y


def program_set(config: ProgramConfig, rng: np.random.Generator, count: int, *, value_scale: float = 1.0,
                dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor, Tensor]:
    """A fixed evaluation set shared by all seeds: x (1, N, T, FEATURES), y = value_scale × value (1, N, 1) and
    the exact values (1, N) int64 (for the digit metric)."""
    programs = generate_many(config, _as_generator(rng), count)
    x, values = encode_batch(programs, value_scale, dtype=_numpy_dtype(dtype))
    y = torch.from_numpy(values.astype(np.float64) * value_scale).to(dtype).view(1, -1, 1)
    return torch.from_numpy(x).unsqueeze(0), y, torch.from_numpy(values).unsqueeze(0)
