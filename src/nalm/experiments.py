"""One configuration of one experiment, end to end: resolve the config, train (or resume), summarise, store.

An experiment run is described by a :class:`RunSpec`. Its resolved configuration (every default filled in) is
hashed into the run's key in the store: running the same spec again returns the stored result, a run that was
killed resumes from its last checkpoint, and a changed option is a new run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from .errors import ConfigError
from .metrics import success_threshold, summarize
from .models import build_model
from .store import Store, config_key
from .tasks.arithmetic import ArithmeticConfig, ArithmeticTask
from .tasks.identity import IdentityConfig, IdentityTask
from .train import TrainConfig, train

#: Bump when a change to the code changes results, so old stored runs are not mistaken for new ones.
PROTOCOL = 2  # 2: training data and evaluation sets from SFC64 streams (1: PCG64)

#: Defaults of the recurrent arithmetic task (ours; the paper gives none): 10 inputs per step, a and b summed
#: over the sequence; train and interpolate on 10 steps, extrapolate on 100 steps of inputs from the same range.
RECURRENT_TASK_DEFAULTS = {"input_size": 10, "extrapolation_range": "1,2", "train_length": 10, "test_length": 100}
EXPERIMENTS = ("arithmetic", "arithmetic-recurrent", "identity")


@dataclass(frozen=True)
class RunSpec:
    """What to run. ``task`` holds task options (fields of ArithmeticConfig or IdentityConfig)."""

    experiment: str
    model: str
    task: dict = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    hidden_size: int = 2

    def __post_init__(self) -> None:
        if self.experiment not in EXPERIMENTS:
            raise ConfigError(f"unknown experiment {self.experiment!r}; choose from: {', '.join(EXPERIMENTS)}")
        if not isinstance(self.hidden_size, int) or self.hidden_size < 1:
            raise ConfigError(f"hidden_size must be a positive integer, got {self.hidden_size!r}")

    @property
    def recurrent(self) -> bool:
        return self.experiment == "arithmetic-recurrent"

    def task_config(self):
        if self.experiment == "identity":
            return _make(IdentityConfig, self.task)
        defaults = RECURRENT_TASK_DEFAULTS if self.recurrent else {}
        return _make(ArithmeticConfig, {**defaults, **self.task})

    def resolved(self) -> dict:
        """The full configuration with every default filled in: what the results are stored under."""
        return {"protocol": PROTOCOL, "experiment": self.experiment, "model": self.model,
                "hidden_size": self.hidden_size, "task": dataclasses.asdict(self.task_config()),
                "train": dataclasses.asdict(self.train)}

    @property
    def name(self) -> str:
        if self.experiment == "identity":
            return f"identity/{self.model}"
        return f"{self.experiment}/{self.model}/{self.task_config().operation}"


def _make(cls, options: dict):
    """Build a config dataclass, naming unknown keys (a typo is an error, not a silent default)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} for {cls.__name__}; allowed: {', '.join(sorted(names))}")
    return cls(**options)


def build(spec: RunSpec):
    """The task, the model (with S seeds) and the success threshold (None where there is none) of a spec."""
    task_config = spec.task_config()
    seeds = spec.train.seed_ids
    if spec.experiment == "identity":
        task = IdentityTask(task_config)
        return task, task.build_model(spec.model, len(seeds)), None
    task = ArithmeticTask(task_config, seeds, recurrent=spec.recurrent)
    model = build_model(spec.model, task_config.input_size, 1, hidden_size=spec.hidden_size,
                        num_seeds=len(seeds), recurrent=spec.recurrent)
    # The recurrent threshold needs sums over long sequences: fewer Monte Carlo samples keep it to seconds.
    threshold = success_threshold(task_config, recurrent=spec.recurrent,
                                  samples=100_000 if spec.recurrent else 1_000_000)
    return task, model, threshold


def run(spec: RunSpec, store: Store, *, progress: bool = False) -> dict:
    """Run ``spec`` (or fetch it from ``store``); returns its summary."""
    config = spec.resolved()
    key = config_key(config)
    existing = store.run(key)
    if existing is not None and existing["status"] == "done":
        return existing["summary"]
    task, model, threshold = build(spec)
    store.start_run(key, spec.experiment, spec.name, config)
    result = train(model, task, spec.train, threshold=threshold, store=store, key=key, progress=progress,
                   desc=spec.name)
    summary = summarize(result.records)
    summary["threshold"] = threshold
    artifacts = task.artifacts(result.model)
    if spec.experiment == "identity":  # no success criterion: the figure's error against input instead
        summary = {k: summary[k] for k in ("seeds", "diverged", "normalized_interpolation_error",
                                           "normalized_extrapolation_error")}
        summary.update(artifacts.pop("summary"))
    summary["seconds"] = round(result.seconds, 2)  # of this process: a resumed run counts from its checkpoint
    store.finish_run(key, result.records, summary, result.seconds, artifacts)
    return summary


def set_threads(threads: int) -> None:
    """Intra-op threads for this process. One is the default: for models this small, two threads were several
    times slower than one (README, Performance); use processes, not threads, to fill the cores."""
    torch.set_num_threads(threads)
