"""Sweeps beyond one machine (issue 15): seed blocks merge exactly, checkpoints travel through task results, the Ray
executor (one local cluster for the whole module) equals the local one, resumes after its driver is killed, records a
raising task and goes on; ``nalm merge`` equals one store that ran both halves."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from toy_experiment import Toy, ToyConfig

from nalm.cli import main
from nalm.engine import RunSpec, register_experiment, run
from nalm.engine.executors import block_spec, fields_of, merge_blocks, seed_blocks, train_block
from nalm.engine.reproduce import shard_of, specs
from nalm.engine.store import Store, config_key
from nalm.engine.train import TrainConfig

TESTS = str(Path(__file__).parent)


@dataclass(frozen=True)
class RayToyConfig(ToyConfig):
    sleep: float = field(default=0.0, metadata={"help": "seconds each task sleeps before it trains"})
    fail_seed: int = field(default=-1, metadata={"help": "a task whose seeds include this one raises"})


@register_experiment
class RayToy(Toy):
    """The toy sum, with a sleep (to kill a driver mid-sweep) and a seed whose block raises."""

    name = "toy-ray"
    help = "the toy sum for the Ray tests"
    Config = RayToyConfig
    claims = ()
    smoke = {"size": 16}

    def train(self, spec, **kwargs):
        config = spec.task_config()
        if config.fail_seed in spec.train.seed_ids:
            raise RuntimeError(f"seed {config.fail_seed} refuses to train")
        time.sleep(config.sleep)
        return super().train(spec, **kwargs)


@pytest.fixture(autouse=True)
def _toy_registered():
    """The toy experiment registered for every test here (another test file's fixture may have removed it)."""
    register_experiment(Toy)
    yield


def _specs(seeds: int = 4, eval_every: int = 25, **task) -> list[RunSpec]:
    train = TrainConfig(iterations=100, seeds=seeds, learning_rate=0.05, batch_size=16, eval_every=eval_every,
                        regularizers={})
    return [RunSpec("toy-ray", m, {"size": 32, **task}, train) for m in ("nau", "linear")]


def _reference(todo: list[RunSpec], path: Path) -> Path:
    """What the local executor stores: each configuration run in one process, all seeds at once."""
    with Store(path) as store:
        for spec in todo:
            run(spec, store)
    return path


def _content(path: Path) -> dict:
    """Every finished run's summary (less its timing), seed rows, curves and artifacts, by key."""
    with Store(path, readonly=True) as store:
        out = {}
        for r in store.runs():
            summary = {k: v for k, v in r["summary"].items() if k != "seconds"}
            names = [n for (n,) in store.conn.execute("SELECT name FROM artifacts WHERE key = ?", (r["key"],))]
            out[r["key"]] = json.dumps([r["name"], r["config"], summary, store.seeds(r["key"]),
                                        store.curves(r["key"]), {n: store.artifact(r["key"], n) for n in names}],
                                       sort_keys=True)
        return out


# -- without Ray ---------------------------------------------------------------------------------------------------
def test_seed_blocks():
    assert seed_blocks(0, 10, 4) == [(0, 4), (4, 4), (8, 2)]
    assert seed_blocks(5, 3, None) == [(5, 3)]
    assert seed_blocks(0, 10, 4, done=[(0, 4)]) == [(4, 4), (8, 2)]
    # a finished block of another size is kept; a partial block (with a checkpoint) that fits is resumed whole
    assert seed_blocks(0, 10, 3, done=[(2, 2)], partial=[(4, 5)]) == [(0, 2), (4, 5), (9, 1)]
    assert seed_blocks(0, 4, 2, done=[(0, 2), (2, 2)]) == []


def test_blocks_and_slices_merge_into_the_same_records():
    """4 seeds as blocks of 3 + 1, each trained in slices that stop at every checkpoint and resume from the one
    returned, merge into exactly the records of the 4 seeds trained at once."""
    spec = _specs()[0]
    whole = spec.exp.train(spec)
    blocks = []
    for first, n in seed_blocks(0, 4, 3):
        checkpoint, slices = None, 0
        while True:
            out = train_block(fields_of(block_spec(spec, first, n)), "cpu", "test_ray", [TESTS], checkpoint, 0.0)
            slices += 1
            if out["status"] == "done":
                break
            checkpoint = (out["step"], out["checkpoint"])
        assert slices == 4  # checkpoints at 25, 50, 75 end a slice; the last step does not
        blocks.append({"first_seed": first, "seeds": n, **out})
    merged = merge_blocks(spec, blocks)
    assert json.dumps(merged.records) == json.dumps(whole.records)
    with pytest.raises(ValueError, match="cover seeds"):
        merge_blocks(spec, blocks[:1])


def test_artifacts_merge_rule():
    spec = _specs()[0]
    parts = [{"first_seed": 0, "seeds": 2, "records": [{"seed": 0}, {"seed": 1}], "artifacts": {"a": 1}, "seconds": 1},
             {"first_seed": 2, "seeds": 2, "records": [{"seed": 2}, {"seed": 3}], "artifacts": {"a": 3}, "seconds": 2}]
    assert merge_blocks(spec, parts[::-1]).artifacts == {"a": 1}  # default: the first block's (lowest seeds)
    RayToy.merge_artifacts = lambda self, spec, ps, records: {"a": sum(a["a"] * s.train.seeds for s, a in ps) / 4,
                                                              "seeds": [r["seed"] for r in records]}
    try:
        result = merge_blocks(spec, parts)
        assert result.artifacts == {"a": 2.0, "seeds": [0, 1, 2, 3]} and result.seconds == 3
    finally:
        del RayToy.merge_artifacts


def test_shards_cover_the_grid_once():
    grid = specs("quick", ["toy-sum"])
    parts = [shard_of(grid, (i, 4)) for i in range(4)]
    assert sorted(s.name for p in parts for s in p) == sorted(s.name for s in grid)
    with pytest.raises(SystemExit):
        main(["reproduce", "--shard", "4/4"])


def test_merge_equals_one_store_that_ran_both_halves(tmp_path, capsys):
    nau, linear = _specs(seeds=2, eval_every=50)
    a = _reference([nau], tmp_path / "a.sqlite")
    b = _reference([linear, nau], tmp_path / "b.sqlite")  # nau in both: kept once
    both = _reference([nau, linear], tmp_path / "both.sqlite")
    out = tmp_path / "out.sqlite"
    assert main(["merge", str(out), str(a), str(b)]) == 0
    assert "1 run(s) copied, 1 already in" in capsys.readouterr().out
    merged, expected = _content(out), _content(both)
    assert merged.keys() == expected.keys() and len(merged) == 2
    # nau's own numbers are the same in every store; linear's come from b
    assert merged == expected
    with Store(out) as s:
        assert s.merge(b) == (0, 2) and s.conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 2
    assert main(["merge", str(out), str(out)]) == 2
    assert main(["merge", str(out), str(tmp_path / "missing.sqlite")]) == 2


def test_ray_options_are_checked(tmp_path, capsys, monkeypatch):
    store = str(tmp_path / "s.sqlite")
    assert main(["reproduce", "--only", "toy-sum", "--seed-block", "2", "--store", store]) == 2
    assert "--executor ray" in capsys.readouterr().err
    assert main(["reproduce", "--only", "toy-sum", "--executor", "ray", "--jobs", "2", "--store", store]) == 2
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert main(["reproduce", "--only", "toy-sum", "--executor", "ray", "--store", store]) == 2
    assert "pip install 'nalm[ray]'" in capsys.readouterr().err


# -- on one local Ray cluster --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster():
    """One local cluster of 2 CPUs for every test below; its address, for a driver in another process."""
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def test_ray_profile_equals_local_and_a_rerun_submits_nothing(cluster, tmp_path, capsys):
    store = tmp_path / "ray.sqlite"
    args = ["reproduce", "--only", "toy-sum", "--executor", "ray", "--no-progress", "--store", str(store)]
    # 2 seeds per configuration as 2 tasks each, in slices of one checkpoint interval (50 of 100 steps)
    assert main(args + ["--seed-block", "1", "--checkpoint-every", "0"]) == 0
    assert "24 tasks submitted, 12 blocks finished, 6 configurations finished, 0 failed" in capsys.readouterr().err
    reference = _reference(specs("quick", ["toy-sum"]), tmp_path / "local.sqlite")
    assert _content(store) == _content(reference) and len(_content(store)) == 6
    with Store(store) as s:
        assert s.conn.execute("SELECT COUNT(*) FROM blocks").fetchone()[0] == 0  # merged into the seed rows
        assert s.conn.execute("SELECT COUNT(*) FROM leases").fetchone()[0] == 0
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "0 configurations to run, 6 already in the store" in err and "0 tasks submitted" in err


def test_a_raising_task_is_recorded_and_the_rest_finish(cluster, tmp_path):
    from nalm.engine.executors.ray_executor import run_sweep

    todo = _specs(fail_seed=3)[:1] + _specs()[1:]  # nau: seeds 2..3 raise; linear: fine
    path = tmp_path / "s.sqlite"
    stats = run_sweep(todo, str(path), seed_block=2, progress=False)
    assert (stats["tasks"], stats["finished"], stats["failed"], stats["runs"]) == (4, 3, 1, 1)
    with Store(path) as s:
        (failure,) = s.failures()
        assert failure["first_seed"] == 2 and "seed 3 refuses to train" in failure["error"]
        bad = config_key(todo[0].resolved())
        assert s.run(bad)["status"] == "running" and [b["first_seed"] for b in s.blocks(bad)] == [0]
        assert s.run(config_key(todo[1].resolved()))["status"] == "done"
    stats = run_sweep(todo, str(path), seed_block=2, progress=False)  # again: only the failed block is submitted
    assert (stats["tasks"], stats["failed"]) == (1, 1)
    with pytest.raises(Exception, match="refuses to train"):
        from nalm.engine.reproduce import _reproduce_ray

        _reproduce_ray(todo, str(path), "test", False, "cpu", {"seed_block": 2})


def _blocks_done(path: Path) -> tuple[int, dict]:
    """(blocks of one seed finished, {key: finished time of the finished runs}) as the store holds them now."""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        blocks = conn.execute("SELECT COUNT(*) FROM blocks WHERE status = 'done'").fetchone()[0]
        runs = dict(conn.execute("SELECT key, finished FROM runs WHERE status = 'done'").fetchall())
        conn.close()
        return blocks + 4 * len(runs), runs
    except sqlite3.Error:
        return 0, {}


def test_a_killed_driver_loses_nothing_and_repeats_no_finished_task(cluster, tmp_path):
    from nalm.engine.executors.ray_executor import run_sweep

    path = tmp_path / "s.sqlite"
    code = (f"import sys; sys.path.insert(0, {TESTS!r}); import test_ray\n"
            f"from nalm.engine.executors.ray_executor import run_sweep\n"
            f"run_sweep(test_ray._specs(sleep=0.3), {str(path)!r}, address={cluster!r}, seed_block=1, "
            f"progress=False)\n")
    driver = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300  # a loaded machine starts Ray's workers slowly; the loop ends at 2 blocks
    while _blocks_done(path)[0] < 2 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    done, finished = _blocks_done(path)
    assert 2 <= done < 8, driver.stderr.read().decode()[-2000:]
    stats = run_sweep(_specs(sleep=0.3), str(path), seed_block=1, progress=False)
    assert stats["tasks"] == 8 - done and stats["failed"] == 0  # nothing finished is trained again
    assert {k: v for k, v in _blocks_done(path)[1].items() if k in finished} == finished  # nor rewritten
    assert _content(path) == _content(_reference(_specs(sleep=0.3), tmp_path / "local.sqlite"))


# -- the same rows however nalm is launched (issue 24) --------------------------------------------------------------
#: The identity and arithmetic parts of a tiny grid (2 seeds, 10 steps), with batches big enough for numpy's
#: OpenBLAS to split a gradient product over its threads: on the 2-core machine of the issue, (64, B) @ (B, 64)
#: rounded differently with 2 threads than with 1 from B = 1,000, and (2, B) @ (B, 100) from B = 10,000.
LAUNCH_GRID = [["identity", "--model", "relu", "--hidden-layers", "64,64", "--batch-size", "1000",
                "--grid-points", "21"],
               ["arithmetic", "--model", "nau-nau", "--batch-size", "10000"]]
LAUNCH_DRIVER = """import json, sys
import nalm.engine.reproduce as R
from nalm.engine import RunSpec, TrainConfig
todo = [RunSpec(c["experiment"], c["model"], c["task"], TrainConfig(**c["train"])) for c in json.loads(sys.argv[1])]
R.specs = lambda profile, only=None: todo  # the tiny grid as the profile: through reproduce's own worker processes
R.reproduce("quick", sys.argv[2], jobs=1, progress=False)
"""


def _launch(args: list[str], threads: str | None, cwd: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                            "MKL_NUM_THREADS")}
    if threads is not None:
        env["OMP_NUM_THREADS"] = threads
    out = subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]


def _exported(path: Path) -> list[dict]:
    """`nalm export`'s rows of a store, by key and seed."""
    with Store(path, readonly=True) as store:
        store.export(path.with_suffix(".json"))
    return sorted(json.loads(path.with_suffix(".json").read_text()), key=lambda r: (r["key"], r["seed"]))


def _differences(rows: list[dict], reference: list[dict]) -> list[str]:
    """Every field of ``rows`` whose JSON text differs from ``reference``'s (bit for bit), as name.seed.field."""
    return [f"{r['name']}.{r['seed']}.{k}: {ref[k]!r} != {r[k]!r}" for r, ref in zip(rows, reference)
            for k in ref if json.dumps(r.get(k)) != json.dumps(ref[k])]


def test_rows_are_identical_however_nalm_is_launched(cluster, tmp_path):
    """`nalm run` with OMP_NUM_THREADS=2, reproduce's workers with it unset and =1, and Ray tasks store the same
    rows, bit for bit: every process that trains holds numpy's BLAS to torch's one thread."""
    from nalm.engine.executors.ray_executor import run_sweep

    stores = {name: tmp_path / f"{name}.sqlite" for name in ("run-2", "unset", "1", "ray")}
    for args in LAUNCH_GRID:
        _launch(["-m", "nalm", "run", *args, "--seeds", "2", "--iterations", "10", "--eval-every", "10",
                 "--evaluation-size", "100", "--no-progress", "--store", str(stores["run-2"])], "2", tmp_path)
    with Store(stores["run-2"], readonly=True) as store:
        configs = [r["config"] for r in store.runs()]
    assert len(configs) == 2
    for threads in ("unset", "1"):
        _launch(["-c", LAUNCH_DRIVER, json.dumps(configs), str(stores[threads])],
                None if threads == "unset" else threads, tmp_path)
    run_sweep([RunSpec(c["experiment"], c["model"], c["task"], TrainConfig(**c["train"])) for c in configs],
              str(stores["ray"]), progress=False)
    rows = {name: _exported(path) for name, path in stores.items()}
    assert len(rows["1"]) == 4 and all(len(r) == 4 for r in rows.values())
    differ = {name: d for name, r in rows.items() if (d := _differences(r, rows["1"]))}
    assert not differ, {name: [f"{len(d)} fields differ from OMP_NUM_THREADS=1's", *d[:3]]
                        for name, d in differ.items()}
