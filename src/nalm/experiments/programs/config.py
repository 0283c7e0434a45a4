"""The options of ``program-add`` and ``program-eval``, and which of them belong to which model."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from nalm.errors import ConfigError

from .models import SEQUENCE_MODELS
from .task import ProgramConfig

#: Evaluation sets: name -> literal range [low, high) (None: the training range).
SPLITS = {"valid": None, "test3": (100, 1000), "test4": (1000, 10_000)}
METRICS = ("digits", "exact", "mae", "rmse")
PAPER_MODELS = ("ugrnn", "lstm", "dnc", "lstm-nalu")
MODELS = PAPER_MODELS + ("lstm-nau", "lstm-nau-nmu")


def _choices(*values) -> dict:
    return {"choices": values}


@dataclass(frozen=True)
class AddConfig:
    """Options of ``program-add`` (and, with the program options of :class:`EvalConfig`, ``program-eval``)."""

    train_low: int = field(default=0, metadata={"help": "training literals are uniform integers in [TRAIN_LOW, "
                                                        "TRAIN_HIGH)"})
    train_high: int = field(default=100, metadata={"help": "upper end (exclusive) of the training literals"})
    value_scale: float = field(default=0.01, metadata={"help": "the value channel holds value × VALUE_SCALE and "
                                                               "the target is the program's value × VALUE_SCALE"})
    loss: str = field(default="rmse", metadata={"help": "training loss per seed (the paper: RMSE)",
                                                **_choices("rmse", "mse")})
    hidden_size: int = field(default=32, metadata={"help": "hidden units of every model's recurrent core"})
    evaluation_size: int = field(default=1000, metadata={"help": "programs in each fixed evaluation set"})
    evaluation_seed: int = field(default=0, metadata={"help": "seed of the fixed evaluation sets"})
    # -- model options (a model ignores those that are not its own; see MODEL_OPTIONS) ---------------------------
    gate: str = field(default="hidden", metadata={"help": "lstm-nalu, lstm-nau-nmu: the gate's logit from the "
                                                          "LSTM state alone (hidden) or G·z as the NALU's own "
                                                          "(input)", **_choices("hidden", "input")})
    gate_bias: float = field(default=10.0, metadata={"help": "lstm-nalu, lstm-nau-nmu with gate=hidden: initial "
                                                             "bias of the gate logit (> 0: starts additive)"})
    eps: float = field(default=0.5, metadata={"help": "lstm-nalu: ε of the NALU's log path log(|z| + ε) (the "
                                                      "paper's NALU: 1e-7)"})
    controller_sees_value: bool = field(default=False, metadata={"help": "lstm-nalu/nau: feed the value channel "
                                                                         "to the configuring LSTM too"})
    forget_bias: float = field(default=1.0, metadata={"help": "ugrnn: bias added to the update gate's logit"})
    memory_size: int = field(default=16, metadata={"help": "dnc: memory locations"})
    word_size: int = field(default=16, metadata={"help": "dnc: width of a memory word"})
    read_heads: int = field(default=4, metadata={"help": "dnc: read heads"})

    def __post_init__(self) -> None:
        for name in ("hidden_size", "evaluation_size", "train_high", "memory_size", "word_size", "read_heads"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if not isinstance(self.train_low, int) or not 0 <= self.train_low < self.train_high:
            raise ConfigError(f"training literals [train_low, train_high) need 0 <= train_low < train_high, got "
                              f"[{self.train_low!r}, {self.train_high!r})")
        if not (isinstance(self.value_scale, (int, float)) and 0 < self.value_scale < math.inf):
            raise ConfigError(f"value_scale must be a positive number, got {self.value_scale!r}")
        if self.loss not in ("rmse", "mse"):
            raise ConfigError(f"loss must be rmse or mse, got {self.loss!r}")
        if self.gate not in ("hidden", "input"):
            raise ConfigError(f"gate must be hidden or input, got {self.gate!r}")
        if not (isinstance(self.eps, float) and 0 < self.eps < 1):
            raise ConfigError(f"eps must be a float in (0, 1), got {self.eps!r}")
        if not isinstance(self.evaluation_seed, int) or self.evaluation_seed < 0:
            raise ConfigError(f"evaluation_seed must be a non-negative integer, got {self.evaluation_seed!r}")

    def programs(self, kind: str) -> ProgramConfig:
        """The distribution of training programs."""
        extra = {} if kind == "add" else {k: getattr(self, k) for k in ("nesting", "operations", "loop_max",
                                                                          "mul_max")}
        return ProgramConfig(kind=kind, low=self.train_low, high=self.train_high, **extra)


@dataclass(frozen=True)
class EvalConfig(AddConfig):
    """Options of ``program-eval``: those of program-add and the distribution of programs."""

    nesting: int = field(default=2, metadata={"help": "operations a program composes (the result of one is an "
                                                      "operand of the next)"})
    operations: str = field(default="pair,vars,ifstat", metadata={
        "help": "comma-separated operations drawn uniformly: pair, vars, ifstat, smallmul, loop, equality "
                "(Fig. 4: assignments, if-statements, + and −)"})
    loop_max: int = field(default=4, metadata={"help": "loop: iterations uniform in [1, LOOP_MAX]"})
    mul_max: int = field(default=4, metadata={"help": "smallmul: multiplier uniform in [1, MUL_MAX]"})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.programs("eval")  # validates the program options


#: Config fields that are options of some models: field -> the models that use it.
MODEL_OPTIONS = {f.name: tuple(m for m, (_, _, allowed) in SEQUENCE_MODELS.items() if f.name in allowed)
                 for f in fields(AddConfig) if any(f.name in a for _, _, a in SEQUENCE_MODELS.values())}
DEFAULTS = {f.name: f.default for f in fields(EvalConfig)}


def model_options(task: dict, model: str) -> dict:
    """The model options of a stored task configuration that ``model`` uses, those differing from the defaults."""
    return {k: task[k] for k, users in MODEL_OPTIONS.items() if model in users and k in task and task[k] != DEFAULTS[k]}
