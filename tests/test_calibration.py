"""The ETA of ``nalm reproduce`` learns from the store: a hand-made store of finished runs with chosen seconds."""

from __future__ import annotations

import dataclasses

import pytest

from nalm.engine import RunSpec
from nalm.engine.calibration import PRIOR_RUNS, Calibration, calibrate
from nalm.engine.progress import duration
from nalm.engine.reproduce import reproduce, specs
from nalm.engine.store import Store, config_key


def _finish(store: Store, spec: RunSpec, seconds: float, config: dict | None = None) -> None:
    config = config or spec.resolved()
    key = config_key(config)
    store.start_run(key, spec.experiment, spec.name, config)
    store.finish_run(key, [], {}, seconds)


def test_factor_is_a_shrunken_ratio_of_measured_to_estimated(tmp_path):
    identity = specs("quick", ["identity"])
    estimates = [s.exp.cost(s) for s in identity[:4]]
    measured = [2 * e for e in estimates[:3]] + [3 * estimates[3]]
    with Store(tmp_path / "s.sqlite") as store:
        for spec, seconds in zip(identity, measured):
            _finish(store, spec, seconds)
        # left out: a run stored under another protocol, one of an experiment that is gone, one without seconds
        _finish(store, identity[4], 100 * estimates[0], {**identity[4].resolved(), "protocol": -1})
        _finish(store, identity[5], 100.0, {**identity[5].resolved(), "experiment": "gone"})
        _finish(store, identity[6], 0.0)
        cal = calibrate(store.runs())
    prior = PRIOR_RUNS * sum(estimates) / 4
    expected = (sum(measured) + prior) / (sum(estimates) + prior)
    assert cal.runs == {"identity": 4}
    assert cal.factors["identity"] == pytest.approx(expected)
    assert 1 < expected < sum(measured) / sum(estimates)  # pulled from the model (1) towards the measured ratio
    spec = identity[7]
    assert cal.cost(spec) == pytest.approx(expected * spec.exp.cost(spec))
    arithmetic = specs("quick", ["arithmetic"])[0]
    assert cal.cost(arithmetic) == arithmetic.exp.cost(arithmetic)  # no finished run: the model itself
    assert cal.describe(["identity", "arithmetic"]) == (f"cost model calibrated on 4 finished runs in this store "
                                                        f"(identity ×{expected:.2f}); uncalibrated for arithmetic")
    assert Calibration().describe(["identity"]).startswith("uncalibrated cost model")


def test_many_runs_outweigh_the_prior(tmp_path):
    spec = specs("quick", ["identity"])[0]
    with Store(tmp_path / "s.sqlite") as store:
        for seed in range(60):  # 60 runs that each took half the model's estimate
            s = dataclasses.replace(spec, train=dataclasses.replace(spec.train, first_seed=seed))
            _finish(store, s, 0.5 * s.exp.cost(s))
        factor = calibrate(store.runs()).factors["identity"]
    assert factor == pytest.approx((30 + PRIOR_RUNS) / (60 + PRIOR_RUNS)) and factor < 0.55


class _NoPool(Exception):
    """Raised instead of starting worker processes: only the start-up line is wanted."""


def test_reproduce_says_which_estimate_it_used(tmp_path, capsys, monkeypatch):
    def no_pool(*args, **kwargs):
        raise _NoPool

    monkeypatch.setattr("nalm.engine.reproduce.ProcessPoolExecutor", no_pool)
    identity = specs("quick", ["identity"])
    with Store(tmp_path / "s.sqlite") as store:
        for spec in identity[1:]:  # all but one configuration finished, each in twice the model's time
            _finish(store, spec, 2 * spec.exp.cost(spec))
    with pytest.raises(_NoPool):
        reproduce("quick", str(tmp_path / "s.sqlite"), only=["identity"], progress=False)
    line = capsys.readouterr().err
    n = len(identity) - 1
    factor = (2 * n + PRIOR_RUNS) / (n + PRIOR_RUNS)  # every run took twice its estimate
    assert f"1 configuration to run, {n} already in the store" in line
    assert f"calibrated on {n} finished runs in this store (identity ×{factor:.2f})" in line
    first = identity[0]
    assert f"{duration(factor * first.exp.cost(first))} of one core" in line
    with pytest.raises(_NoPool):  # an empty store: the model as it is
        reproduce("quick", str(tmp_path / "empty.sqlite"), only=["identity"], progress=False)
    assert "uncalibrated cost model (no finished run of these experiments in the store yet)" in capsys.readouterr().err
