"""Experiments as plug-ins: the protocol an experiment implements, and the registry.

An experiment is one package (or one module) that subclasses :class:`Experiment` and registers it with
``@register_experiment``. It declares, in one place: its name and one-line help; a frozen config dataclass of its task
options (unknown keys are an error); the models it accepts; how to build the task (data, loss, evaluation splits and
their metrics) and the model for S seeds; how a run is summarised; its grids for each ``nalm reproduce`` profile and
their cost; its section of the report; the paper's claims, each with a check over the stored results; and how to
sample examples. The engine (trainer, store, ``reproduce``, report) and the CLI only ever go through this protocol
and the registry, so a new experiment appears in ``nalm run``, ``nalm reproduce --only``, ``nalm sample``, ``nalm
report`` and ``nalm export`` without touching any other file.

The engine never imports an experiment. Experiments are found through the ``nalm.experiments`` entry-point group
(nalm's built-ins, :mod:`nalm.experiments`, are one entry point of nalm's own ``pyproject.toml``; an outside plug-in
adds its own) or the ``NALM_EXPERIMENTS`` environment variable, on the first look-up (:func:`load_plugins`).

The house, top to bottom (arrows point down only; enforced by import-linter, contracts in ``pyproject.toml``)::

    nalm.cli                      the command line, built from the registry
    nalm.experiments.<name>       one package per experiment: task and data, networks, registration, report, bench
    nalm.engine                   runs any experiment and names none (this protocol, trainer, store, reproduce, ...)
    nalm.nn                       seed-axis building blocks shared by experiments (Ensemble, SeedRNN, MLPs)
    nalm.units                    the arithmetic units, their registry and RecurrentCell
    nalm.functional, nalm.errors  the maths of every unit as pure functions; the exceptions

Plug-in authors import what they need from :mod:`nalm.engine` (``Experiment``, ``register_experiment``, ``Claim``,
``Verdict``, ``RunSpec``, ``Task``, ...); ``tests/toy_experiment.py`` is a worked example.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from torch import nn

from nalm.errors import ConfigError

from .train import TrainConfig, TrainResult, train

REPRODUCED, NOT_REPRODUCED, NOT_RUN = "reproduced", "not reproduced", "not run"
PROFILES = ("quick", "acceptance", "paper")


@dataclass(frozen=True)
class Verdict:
    """A claim's answer over the stored results, with the numbers behind it, and for an answer other than
    *reproduced* its *why* where one is known: one sentence and the run (configuration and seeds) or the published
    source that shows it."""

    answer: str
    evidence: str
    why: str = ""

    def __post_init__(self) -> None:
        if self.answer not in (REPRODUCED, NOT_REPRODUCED, NOT_RUN):
            raise ConfigError(f"a verdict is {REPRODUCED!r}, {NOT_REPRODUCED!r} or {NOT_RUN!r}, got {self.answer!r}")


@dataclass(frozen=True)
class Claim:
    """A claim of the paper (SPEC §2) as a sentence, and a check of it over an experiment's finished runs.

    ``why`` is the cause of a failure that a controlled run has shown (one sentence naming that run, or a published
    source reporting the same failure); :meth:`verdict` attaches it to a *not reproduced* answer whose check did not
    give a *why* of its own. A *reproduced* or *not run* answer never carries it."""

    text: str
    check: Callable[["ReportContext"], Verdict]
    why: str = ""

    def verdict(self, ctx: "ReportContext") -> Verdict:
        """The check's verdict over ``ctx`` (*not run* without runs), with the claim's *why* where it applies."""
        v = self.check(ctx) if ctx.runs else Verdict(NOT_RUN, "no finished run of this experiment")
        if v.answer != NOT_REPRODUCED:
            return dataclasses.replace(v, why="")
        return v if v.why or not self.why else dataclasses.replace(v, why=self.why)


@dataclass
class ReportContext:
    """What an experiment's report section and claim checks may read: the store (read-only), the experiment's
    finished runs (dicts with key, name, config, summary), and the folder where figures go."""

    store: object
    runs: list[dict]
    folder: Path


def make_config(cls, options: dict):
    """Build a config dataclass, naming unknown keys (a typo is an error, not a silent default)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} for {cls.__name__}; allowed: {', '.join(sorted(names))}")
    return cls(**options)


class Experiment:
    """The protocol of an experiment. Subclass it, set the class attributes, implement the methods marked
    *required*, and decorate the class with ``@register_experiment``."""

    #: Registry name, as typed on the command line (``nalm run NAME``).
    name: ClassVar[str]
    #: One line for ``nalm --help`` listings; ``description`` is the longer text of ``nalm run NAME --help``.
    help: ClassVar[str]
    description: ClassVar[str] = ""
    #: Frozen dataclass of the task options; each field becomes a ``nalm run``/``nalm sample`` option. A field's
    #: ``metadata`` may hold ``help``, ``choices``, ``flags`` (extra option names, e.g. ``("--op",)``) and
    #: ``runtime`` (True: not part of the stored configuration, e.g. a data folder or a log directory) and ``added``
    #: (True: an option added after results were stored, left out of the stored configuration while at its
    #: default, so that earlier runs keep their keys).
    Config: ClassVar[type]
    #: The models of the paper's rows (``--help`` lists them); ``check_model`` decides what is accepted.
    models: ClassVar[tuple[str, ...]] = ()
    default_model: ClassVar[str]
    model_help: ClassVar[str] = ""
    #: Option names of the model choice on the command line.
    model_flags: ClassVar[tuple[str, ...]] = ("--model",)
    #: Bumped when a change of the code changes this experiment's results (part of every stored configuration).
    protocol: ClassVar[int] = 1
    #: Defaults of the training options (fields of TrainConfig) for ``nalm run``.
    train_defaults: ClassVar[dict] = {}
    #: Training options (fields of TrainConfig) this experiment's own trainer does not apply: setting one is an error
    #: when the RunSpec is made (the default trainer applies them all).
    unsupported_train: ClassVar[tuple[str, ...]] = ()
    #: The splits ``nalm sample --split`` knows; the first is the default.
    splits: ClassVar[tuple[str, ...]] = ("train",)
    claims: ClassVar[tuple[Claim, ...]] = ()
    #: Whether ``nalm sample --png FILE`` is offered (``write_png``).
    png: ClassVar[bool] = False
    #: Task options that make a run tiny: the test suite trains every registered experiment with them (2 seeds,
    #: a few steps), so an experiment is tested the moment it is registered.
    smoke: ClassVar[dict] = {}

    # -- building and training -----------------------------------------------------------------------------------
    def check_model(self, model: str) -> None:
        """Raise ConfigError unless ``model`` is accepted."""
        if model not in self.models:
            raise ConfigError(f"unknown model {model!r} for {self.name}; choose from: {', '.join(self.models)}")

    def check_run(self, config, model: str) -> None:
        """Raise ConfigError when ``model`` cannot run with task ``config`` (checked when a :class:`RunSpec` is made,
        before anything is stored); by default :meth:`check_model`. Override for options that suit some models only."""
        self.check_model(model)

    def task(self, config, seeds: list[int]):
        """*Required* (for the default ``train``): the :class:`nalm.engine.task.Task` of ``config`` for ``seeds``."""
        raise NotImplementedError

    def model(self, config, model: str, num_seeds: int) -> nn.Module:
        """*Required* (for the default ``train``): model ``model`` with ``num_seeds`` stacked seeds."""
        raise NotImplementedError

    def train(self, spec: "RunSpec", *, store=None, key: str | None = None, progress: bool = False,
              device=None) -> TrainResult:
        """Train the seeds of ``spec``; the default is the supervised seed-batched trainer. An experiment with its
        own loop (reinforcement learning) overrides this and returns the same TrainResult."""
        config = spec.task_config()
        task = self.task(config, spec.train.seed_ids)
        model = self.model(config, spec.model, spec.train.seeds)
        result = train(model, task, spec.train, store=store, key=key, progress=progress, desc=spec.name,
                       device=device)
        result.artifacts = task.artifacts(result.model)
        return result

    def summarize(self, spec: "RunSpec", result: TrainResult) -> dict:
        """The run's summary (stored as JSON, printed by ``nalm run``): by default Madsen & Johansen's statistics
        over the per-seed records (nalm.engine.metrics.summarize)."""
        from .metrics import summarize

        return summarize(result.records)

    def run_name(self, config, model: str) -> str:
        return f"{self.name}/{model}"

    # -- sweeps and reports ----------------------------------------------------------------------------------------
    def grid(self, profile: str) -> list["RunSpec"]:
        """The configurations ``nalm reproduce --profile PROFILE`` runs (profiles: quick, acceptance, paper)."""
        return []

    def cost(self, spec: "RunSpec") -> float:
        """Estimated seconds of one core for ``spec`` (the ETA of ``reproduce``); a rough default."""
        return spec.train.iterations * (1e-3 + 2.5e-5 * spec.train.seeds)

    def report(self, ctx: ReportContext) -> list[str]:
        """Markdown lines of this experiment's report section (tables beside published values, figures)."""
        return []

    # -- looking at the data ---------------------------------------------------------------------------------------
    def sample(self, config, split: str, count: int, seed: int) -> list[dict]:
        """*Required*: ``count`` examples of ``split`` as the model receives them, with their targets (JSON-able
        dicts; the model seed ``seed`` picks the stream where the data depend on it)."""
        raise NotImplementedError

    def write_png(self, config, split: str, count: int, seed: int, path: Path) -> None:
        raise ConfigError(f"{self.name} has no picture to draw; use nalm sample without --png")


_REGISTRY: dict[str, Experiment] = {}
#: Whether the entry points and ``$NALM_EXPERIMENTS`` have been imported (once, on the first look-up).
_plugins_loaded = False

#: The entry-point group through which experiments are found: nalm's own built-ins and every outside plug-in.
ENTRY_POINT_GROUP = "nalm.experiments"


def load_plugins() -> None:
    """Import the modules of the ``nalm.experiments`` entry points (nalm's own first) and of
    ``$NALM_EXPERIMENTS`` (comma-separated module names). Importing a module registers its experiments; this runs by
    itself on the first :func:`get_experiment` or :func:`list_experiments`, and again only when called."""
    global _plugins_loaded
    from importlib.metadata import entry_points

    _plugins_loaded = True
    points = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: getattr(ep.dist, "name", "") != "nalm")
    names = [ep.value.split(":")[0] for ep in points]
    names += [n.strip() for n in os.environ.get("NALM_EXPERIMENTS", "").split(",") if n.strip()]
    for module in names:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ConfigError(f"cannot import experiment plug-in {module!r} (from NALM_EXPERIMENTS or an entry "
                              f"point): {e}") from None


def _registry() -> dict[str, Experiment]:
    if not _plugins_loaded:
        load_plugins()
    return _REGISTRY


def register_experiment(cls: type[Experiment]) -> type[Experiment]:
    """Class decorator: register an experiment under ``cls.name`` (a duplicate name is an error)."""
    for attr in ("name", "help", "Config", "default_model"):
        if not hasattr(cls, attr):
            raise ConfigError(f"experiment {cls.__name__} must set {attr}")
    if not dataclasses.is_dataclass(cls.Config):
        raise ConfigError(f"experiment {cls.name}: Config must be a dataclass")
    if cls.name in _REGISTRY and type(_REGISTRY[cls.name]) is not cls:
        raise ConfigError(f"experiment {cls.name!r} is already registered (by {type(_REGISTRY[cls.name]).__module__})")
    _REGISTRY[cls.name] = cls()
    return cls


def unregister_experiment(name: str) -> None:
    _REGISTRY.pop(name, None)


def get_experiment(name: str) -> Experiment:
    registry = _registry()
    try:
        return registry[name]
    except KeyError:
        raise ConfigError(f"unknown experiment {name!r}; choose from: {', '.join(registry)}") from None


def list_experiments() -> list[str]:
    """Registered experiment names, in registration order (nalm's built-ins in the order of the paper)."""
    return list(_registry())


@dataclass(frozen=True)
class RunSpec:
    """What to run: an experiment, a model, task options (fields of the experiment's Config) and training."""

    experiment: str
    model: str
    task: dict = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        self.exp.check_run(self.task_config(), self.model)
        default = TrainConfig()
        for name in self.exp.unsupported_train:
            if getattr(self.train, name) != getattr(default, name):
                raise ConfigError(f"{self.experiment} does not support the training option {name} (its own trainer "
                                  f"does not apply it); leave it at {getattr(default, name)!r}")

    @property
    def exp(self) -> Experiment:
        return get_experiment(self.experiment)

    def task_config(self):
        return make_config(self.exp.Config, self.task)

    def resolved(self) -> dict:
        """The full configuration with every default filled in: what the results are stored under. Config fields
        marked ``metadata={"runtime": True}`` (where data are read from, where logs go) are not part of it: they
        do not change what a run computes. Fields marked ``metadata={"added": True}`` are left out while at their
        default (so adding an option does not change the keys of the runs stored before it)."""
        config = self.task_config()
        fields = dataclasses.fields(config)
        skip = {f.name for f in fields if f.metadata.get("runtime")
                or (f.metadata.get("added") and getattr(config, f.name) == f.default)}
        task = {k: v for k, v in dataclasses.asdict(config).items() if k not in skip}
        return {"protocol": self.exp.protocol, "experiment": self.experiment, "model": self.model,
                "task": task, "train": self.train.stored()}

    @property
    def name(self) -> str:
        return self.exp.run_name(self.task_config(), self.model)
