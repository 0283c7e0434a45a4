"""Claims carry their *why*, and runs that differ only in their seeds are read as one (nalm.engine.pooling).

Stores are built by hand (start_run / finish_run with made-up seed rows), never by training.
"""

from __future__ import annotations

import pytest

from nalm.engine import NOT_REPRODUCED, NOT_RUN, REPRODUCED, Claim, ReportContext, RunSpec, Verdict
from nalm.engine.metrics import summarize
from nalm.engine.pooling import PooledStore
from nalm.engine.report import write_report
from nalm.engine.store import Store, config_key
from nalm.engine.train import TrainConfig


def _rows(first: int, n: int, successes: set[int]) -> list[dict]:
    return [{"seed": s, "success": int(s in successes), "solved_at": 100 * (s + 1) if s in successes else None,
             "sparsity_error": 0.01, "diverged": 0, "diverged_at": None, "best_step": 1000,
             "interpolation_mse": 1e-9, "interpolation_mse_init": 1.0, "extrapolation_mse": 1e-8,
             "extrapolation_mse_init": 1.0} for s in range(first, first + n)]


def _add(store: Store, first: int, n: int, successes: set[int], model: str = "nau") -> str:
    spec = RunSpec("arithmetic", model, {"operation": "add"},
                   TrainConfig(iterations=1000, seeds=n, first_seed=first))
    config = spec.resolved()
    key = config_key(config)
    records = _rows(first, n, successes)
    store.start_run(key, spec.experiment, spec.name, config)
    store.finish_run(key, records, {**summarize(records), "threshold": 1e-5}, 2.0,
                     {"note": {"first_seed": first}})
    return key


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "s.sqlite") as s:
        yield s


def test_runs_that_differ_only_in_seeds_pool_into_one(store):
    keys = [_add(store, 0, 2, {0, 1}), _add(store, 2, 3, {3}), _add(store, 5, 1, set())]
    _add(store, 0, 4, {0}, model="nmu")  # another model: never pooled with the NAU
    view = PooledStore(store)
    runs = {r["config"]["model"]: r for r in view.runs("arithmetic")}
    nau = runs["nau"]
    assert nau["members"] == keys and nau["key"].startswith("pooled:")
    assert nau["config"]["train"]["first_seed"] == 0 and nau["config"]["train"]["seeds"] == 6
    # the summary is the experiment's own over all six seeds, not an average of the three summaries
    assert nau["summary"]["seeds"] == 6 and nau["summary"]["successes"] == 3
    assert nau["summary"]["solved_at_median"] == 200.0  # solved at 100, 200, 400
    assert [r["seed"] for r in view.seeds(nau["key"])] == list(range(6))
    assert view.artifact(nau["key"], "note") == {"first_seed": 0}  # one run's artifacts stand for the pool
    assert runs["nmu"]["summary"]["seeds"] == 4 and "members" not in runs["nmu"]
    assert view.seeds(runs["nmu"]["key"]) == store.seeds(runs["nmu"]["key"])


@pytest.mark.parametrize("blocks", [[(0, 2), (3, 2)], [(0, 3), (2, 2)]], ids=["gap", "overlap"])
def test_runs_with_a_gap_or_an_overlap_stay_apart(store, blocks):
    for first, n in blocks:
        _add(store, first, n, {first})
    runs = PooledStore(store).runs("arithmetic")
    assert len(runs) == 2 and all("members" not in r for r in runs)


def _ctx(runs):
    return ReportContext(None, runs, None)


def test_a_claim_attaches_its_why_to_a_failure_only():
    fails = Claim("x", lambda ctx: Verdict(NOT_REPRODUCED, "numbers"), why="the gate never closes (run R, 20 seeds)")
    holds = Claim("x", lambda ctx: Verdict(REPRODUCED, "numbers"), why="unused")
    own = Claim("x", lambda ctx: Verdict(NOT_REPRODUCED, "numbers", why="its own cause"), why="the claim's")
    assert fails.verdict(_ctx([{}])).why == "the gate never closes (run R, 20 seeds)"
    assert holds.verdict(_ctx([{}])) == Verdict(REPRODUCED, "numbers")
    assert own.verdict(_ctx([{}])).why == "its own cause"
    assert fails.verdict(_ctx([])) == Verdict(NOT_RUN, "no finished run of this experiment")


def test_report_shows_pooled_seeds_and_the_why_column(tmp_path):
    path = tmp_path / "s.sqlite"
    with Store(path) as store:
        _add(store, 0, 3, {0, 1, 2})
        _add(store, 3, 2, {3})
    text = write_report(path, tmp_path / "report.md", only=["arithmetic"]).read_text()
    header = next(line for line in text.splitlines() if line.startswith("| experiment | claim"))
    assert header.rstrip(" |").endswith("why")
    assert "5 seeds × 1,000 iterations" in text  # the pooled 5-seed result, not two runs of 3 and 2
    rows = [line for line in text.splitlines() if line.startswith("| arithmetic |")]
    assert rows and all(line.count("|") == 6 for line in rows)
