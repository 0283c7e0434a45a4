"""The ETA of ``nalm reproduce``, learnt from this store: each experiment's cost model times a factor fitted to the
seconds its finished runs took.

An experiment's :meth:`~nalm.engine.experiment.Experiment.cost` is a model of one core's seconds, fitted once on some
machine under some load. The store knows better: every finished run holds its configuration and the seconds it took
here. For each experiment the factor is a ratio of sums over its finished runs, with the cost model as the prior,
worth :data:`PRIOR_RUNS` runs of the mean estimate ē::

    factor = (Σ measured + K·ē) / (Σ estimated + K·ē)

so that one odd run moves the estimate a little, forty runs move it almost all the way to what they measured, and
an experiment with no finished run keeps its model (factor 1). Long runs weigh more than short ones, as they do in
the total. Runs stored under another protocol, or whose configuration no longer builds, are left out. A run resumed
from a checkpoint stored only the seconds after its resumption, so it makes the factor a little optimistic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nalm.errors import NalmError

from .experiment import RunSpec, get_experiment
from .train import TrainConfig

#: Weight of the cost model, in runs of its mean estimate.
PRIOR_RUNS = 3


@dataclass(frozen=True)
class Calibration:
    """Per experiment: the factor on its cost model and the finished runs it was fitted on."""

    factors: dict[str, float] = field(default_factory=dict)
    runs: dict[str, int] = field(default_factory=dict)

    def cost(self, spec: RunSpec) -> float:
        """Estimated seconds of one core for ``spec``: its experiment's cost model times that experiment's factor."""
        return spec.exp.cost(spec) * self.factors.get(spec.experiment, 1.0)

    def describe(self, experiments) -> str:
        """Which estimate the start-up line used, for ``experiments`` (those with configurations to run)."""
        names = sorted(set(experiments))
        fitted = [n for n in names if self.runs.get(n)]
        if not fitted:
            return "uncalibrated cost model (no finished run of these experiments in the store yet)"
        runs = sum(self.runs[n] for n in fitted)
        text = (f"cost model calibrated on {runs} finished run{'s' * (runs != 1)} in this store ("
                + ", ".join(f"{n} ×{self.factors[n]:.2f}" for n in fitted) + ")")
        rest = [n for n in names if n not in fitted]
        return text + (f"; uncalibrated for {', '.join(rest)}" if rest else "")


def calibrate(runs: list[dict]) -> Calibration:
    """The :class:`Calibration` of a store's finished ``runs`` (``Store.runs()``; see the module docstring)."""
    sums: dict[str, list[float]] = {}  # experiment -> [runs, Σ measured, Σ estimated]
    for run in runs:
        config, seconds = run["config"], run["seconds"]
        if not seconds or seconds <= 0:
            continue
        try:
            exp = get_experiment(config["experiment"])
            if config.get("protocol") != exp.protocol:
                continue
            spec = RunSpec(config["experiment"], config["model"], config["task"], TrainConfig(**config["train"]))
            estimate = exp.cost(spec)
        except (NalmError, KeyError, TypeError, ValueError):  # an experiment gone, or a configuration of older code
            continue
        if estimate > 0:
            s = sums.setdefault(spec.experiment, [0, 0.0, 0.0])
            s[0], s[1], s[2] = s[0] + 1, s[1] + seconds, s[2] + estimate
    factors, counts = {}, {}
    for name, (n, measured, estimated) in sums.items():
        prior = PRIOR_RUNS * estimated / n
        factors[name] = (measured + prior) / (estimated + prior)
        counts[name] = int(n)
    return Calibration(factors, counts)
