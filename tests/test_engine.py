"""The seed-batched trainer, the store and resumption: small sizes, real behaviour."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest
import torch

from nalm.engine import RunSpec, run
from nalm.engine.store import Store, config_key
from nalm.engine.train import Regularizer, TrainConfig, train
from nalm.errors import ConfigError
from nalm.experiments.arithmetic.task import ArithmeticConfig, ArithmeticTask
from nalm.nn.models import build_model

SMALL_TASK = {"operation": "add", "input_size": 10, "evaluation_size": 500}
REGS = {"nau": {"scale": 0.01, "start": 100, "end": 300}}


def small_spec(seeds=3, first_seed=0, iterations=400, model="nau-nau", lr_decay=None, **task) -> RunSpec:
    cfg = TrainConfig(iterations=iterations, seeds=seeds, first_seed=first_seed, eval_every=100,
                      batch_size=32, learning_rate=1e-2, regularizers=REGS, lr_decay=lr_decay)
    return RunSpec("arithmetic", model, {**SMALL_TASK, **task}, cfg)


def records_of(spec: RunSpec, store_path) -> list[dict]:
    with Store(store_path) as store:
        run(spec, store)
        return store.seeds(config_key(spec.resolved()))


def test_regularizer_ramp():
    r = Regularizer(10.0, 100, 300)
    assert [r(0), r(100), r(200), r(300), r(10_000)] == [0.0, 0.0, 5.0, 10.0, 10.0]
    assert Regularizer.parse("nmu=10:1e4:2e4") == ("nmu", Regularizer(10.0, 10_000, 20_000))


def test_same_command_twice_gives_identical_results(tmp_path):
    a = records_of(small_spec(), tmp_path / "a.sqlite")
    b = records_of(small_spec(), tmp_path / "b.sqlite")
    assert a == b
    assert len(a) == 3 and all(r["interpolation_mse"] < r["interpolation_mse_init"] for r in a)


def test_seed_batched_equals_one_seed_at_a_time(tmp_path):
    """Seed 1 of a 3-seed run trains exactly as a run of seed 1 alone (own init, own data stream)."""
    together = records_of(small_spec(seeds=3), tmp_path / "a.sqlite")
    alone = records_of(small_spec(seeds=1, first_seed=1), tmp_path / "b.sqlite")
    assert alone[0]["seed"] == 1
    for col in ("interpolation_mse", "extrapolation_mse", "interpolation_mse_init", "sparsity_error"):
        assert together[1][col] == pytest.approx(alone[0][col], rel=1e-4, abs=1e-9), col
    assert together[1]["best_step"] == alone[0]["best_step"]


def test_finished_run_is_not_redone(tmp_path):
    path = tmp_path / "s.sqlite"
    spec = small_spec()
    with Store(path) as store:
        first = run(spec, store)
        store.conn.execute("UPDATE runs SET summary = json_set(summary, '$.marker', 1)")
        store.conn.commit()
        again = run(spec, store)
    assert again == {**first, "marker": 1}


class PoisonedTask(ArithmeticTask):
    """Seed ``victim`` gets NaN inputs from step ``after`` on; every other seed's data is untouched."""

    def __init__(self, *args, victim: int, after: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.victim, self.after, self.calls = victim, after, 0

    def sample(self, bitgens, batch_size, buffer=None):
        x, y, buffer = super().sample(bitgens, batch_size, buffer)
        self.calls += 1
        if self.calls > self.after:
            x = x.clone()
            x[self.victim] = float("nan")
            y = self.targets(x)
        return x, y, buffer


def test_diverging_seed_does_not_disturb_the_others():
    config = ArithmeticConfig(**SMALL_TASK)
    cfg = TrainConfig(iterations=300, seeds=3, eval_every=100, batch_size=32, learning_rate=1e-2, regularizers=REGS)
    results = []
    for poisoned in (False, True):
        task_cls = PoisonedTask if poisoned else ArithmeticTask
        extra = {"victim": 1, "after": 150} if poisoned else {}
        task = task_cls(config, cfg.seed_ids, **extra)
        task.threshold = 1e-3
        model = build_model("nau-nau", 10, num_seeds=3)
        results.append(train(model, task, cfg).records)
    clean, poisoned = results
    assert poisoned[1]["diverged"] and not poisoned[1]["success"] and poisoned[1]["diverged_at"] == 200
    for i in (0, 2):
        assert not poisoned[i]["diverged"]
        assert poisoned[i] == clean[i]


def test_lr_decay_schedule_and_stored_configuration():
    c = TrainConfig(iterations=100, lr_decay=0.5)
    assert [c.lr_scale(t) for t in (1, 50)] == [1.0, 1.0]
    assert c.lr_scale(75) == pytest.approx(0.5005) and c.lr_scale(100) == pytest.approx(0.001)
    assert all(c.lr_scale(t) > c.lr_scale(t + 1) for t in range(50, 100))
    assert TrainConfig(iterations=100).lr_scale(100) == 1.0
    for bad in (1.0, -0.1, "half"):
        with pytest.raises(ConfigError, match="lr_decay"):
            TrainConfig(lr_decay=bad)
    # Left out of the stored configuration while off, so runs stored before the option existed keep their keys.
    assert "lr_decay" not in small_spec().resolved()["train"]
    assert small_spec(lr_decay=0.5).resolved()["train"]["lr_decay"] == 0.5


def test_lr_decay_reaches_the_optimiser(tmp_path):
    """A decay from step 0 trains differently from constant rates (the same seeds, data and start)."""
    plain = records_of(small_spec(seeds=1, iterations=100), tmp_path / "a.sqlite")
    decayed = records_of(small_spec(seeds=1, iterations=100, lr_decay=0.0), tmp_path / "b.sqlite")
    assert plain[0]["interpolation_mse_init"] == decayed[0]["interpolation_mse_init"]
    assert plain[0]["interpolation_mse"] != decayed[0]["interpolation_mse"]


@pytest.mark.parametrize("lr_decay", [None, 0.3])
def test_kill_and_resume_matches_an_uninterrupted_run(tmp_path, lr_decay):
    """Interrupt a run after its checkpoint at step 200, resume it: the final numbers equal an uninterrupted run's
    (with a learning-rate decay that starts before the interruption too)."""
    spec = small_spec(iterations=500, lr_decay=lr_decay)
    config = spec.task_config()
    task, model = spec.exp.task(config, spec.train.seed_ids), spec.exp.model(config, spec.model, spec.train.seeds)
    key = config_key(spec.resolved())

    class Killed(Exception):
        pass

    with Store(tmp_path / "killed.sqlite") as store:
        store.start_run(key, spec.experiment, spec.name, spec.resolved())
        original = store.save_checkpoint

        def save_then_die(key_, step, state, rows):
            original(key_, step, state, rows)
            if step == 200:
                raise Killed  # as if the process died right after the transaction committed

        store.save_checkpoint = save_then_die
        with pytest.raises(Killed):
            train(model, task, spec.train, store=store, key=key)
        assert store.load_checkpoint(key)[0] == 200
        assert {r["step"] for r in store.curves(key)} == {0, 100, 200}
        store.save_checkpoint = original
        run(spec, store)  # resumes from step 200
        resumed = store.seeds(key)
        curve_steps = sorted({r["step"] for r in store.curves(key)})
        assert store.load_checkpoint(key) is None
    uninterrupted = records_of(spec, tmp_path / "clean.sqlite")
    assert resumed == uninterrupted
    assert curve_steps == [0, 100, 200, 300, 400, 500]


def test_store_export_and_reject_garbage(tmp_path):
    path = tmp_path / "s.sqlite"
    records_of(small_spec(seeds=2), path)
    with Store(path) as store:
        assert store.export(tmp_path / "out.csv") == 2
        assert store.export(tmp_path / "out.json") == 2
    assert (tmp_path / "out.csv").read_text().count("\n") == 3
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    from nalm import DataError

    with pytest.raises(DataError, match="not a nalm results database"):
        Store(bad)


def test_union_and_negative_ranges_sample_inside(tmp_path):
    config = ArithmeticConfig(input_size=10, interpolation_range="-2,-1:1,2", extrapolation_range="-6,-2")
    task = ArithmeticTask(config, [0, 1])
    from nalm.engine.task import seed_generators

    bitgens = [g.bit_generator for g in seed_generators([0, 1], "data")]
    x, y, _ = task.sample(bitgens, 1000)
    assert ((x.abs() >= 1) & (x.abs() < 2)).all() and (x < 0).any() and (x > 0).any()
    xe, _ = task.evaluation_sets()["extrapolation"]
    assert ((xe >= -6) & (xe < -2)).all()
    assert torch.allclose(y[..., 0], (x @ task._masks.transpose(-1, -2)).sum(-1))


def test_kill_dash_9_then_same_command_resumes(tmp_path):
    """A real `kill -9` of `nalm run` mid-training; the same command then finishes with an uninterrupted run's numbers."""
    import json
    import os
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    store = tmp_path / "killed.sqlite"
    args = [sys.executable, "-m", "nalm.cli", "run", "arithmetic", "--model", "nau-nau", "--input-size", "10",
            "--seeds", "4", "--iterations", "6000", "--eval-every", "100", "--no-progress", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args + ["--store", str(store)], env=env, stdout=subprocess.PIPE)
    deadline = time.monotonic() + 120
    step = 0
    while step < 300 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
        try:
            with sqlite3.connect(store) as conn:
                row = conn.execute("SELECT step FROM checkpoints").fetchone()
            step = row[0] if row else 0
        except sqlite3.Error:
            pass
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert step >= 300
    resumed = subprocess.run(args + ["--store", str(store)], env=env, capture_output=True, check=True)
    clean = subprocess.run(args + ["--store", str(tmp_path / "clean.sqlite")], env=env, capture_output=True,
                           check=True)
    a, b = json.loads(resumed.stdout), json.loads(clean.stdout)
    a.pop("seconds"), b.pop("seconds")
    assert a == b
    with sqlite3.connect(store) as k, sqlite3.connect(tmp_path / "clean.sqlite") as c:
        query = "SELECT seed, extrapolation_mse, interpolation_mse, best_step FROM seeds ORDER BY seed"
        assert k.execute(query).fetchall() == c.execute(query).fetchall()
        assert k.execute("SELECT COUNT(*) FROM curves").fetchone() == c.execute("SELECT COUNT(*) FROM curves").fetchone()


def _processes_with(marker: bytes) -> list[int]:
    """Live (not zombie) processes whose environment holds ``marker``: a process and everything it started."""
    import os

    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if marker not in f.read():
                    continue
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            found.append(int(entry))
    return found


# The parent-death signal (prctl) and /proc are Linux features; elsewhere the test has nothing to check.
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is a Linux feature")
@pytest.mark.parametrize("moment", ["at once", "during start-up", "workers started", "mid-training"])
def test_reproduce_leaves_no_process_behind_when_killed(tmp_path, moment):
    """`kill -9` of `nalm reproduce` at any moment, from start-up to mid-training, must leave no process of ours
    behind: no worker training on as an orphan, no resource tracker waiting on a dead parent."""
    import os
    import signal
    import sqlite3
    import subprocess
    import time
    import uuid

    marker = f"NALM_TEST_MARKER={uuid.uuid4().hex}"
    store = tmp_path / "s.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "nalm", "reproduce", "--profile", "quick", "--only", "identity",
                             "--jobs", "2", "--no-progress", "--store", str(store)],
                            env={**os.environ, "OMP_NUM_THREADS": "1", marker.split("=")[0]: marker.split("=")[1]},
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    if moment == "during start-up":
        time.sleep(0.3)
    elif moment == "workers started":
        while len(_processes_with(marker.encode())) < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
    elif moment == "mid-training":
        step = 0
        while not step and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            try:
                with sqlite3.connect(store) as conn:
                    step = conn.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0]
            except sqlite3.Error:
                pass
        assert step, "no run reached its first checkpoint"
    assert proc.poll() is None, "reproduce ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while (left := _processes_with(marker.encode())) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"process(es) {left} outlived the killed reproduce ({moment})"


def test_tensorboard_logs_each_seed_at_each_evaluation(tmp_path, capsys):
    """``nalm run ... --tensorboard DIR``: one TensorBoard run per seed with every evaluation metric and the training
    loss at each evaluation; the folder is not part of the stored configuration (the same run without it is found)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from nalm.cli import main

    args = ["run", "identity", "--evaluation-size", "50", "--grid-points", "11", "--seeds", "2", "--first-seed", "3",
            "--iterations", "4", "--eval-every", "2", "--store", str(tmp_path / "s.sqlite"), "--json", "--no-progress"]
    assert main(args + ["--tensorboard", str(tmp_path / "tb")]) == 0
    logged = {}
    for seed in (3, 4):
        events = EventAccumulator(str(tmp_path / "tb" / f"seed{seed}"))
        events.Reload()
        logged[seed] = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
        assert [s for s, _ in logged[seed]["train/loss"]] == [2, 4]
        evaluation = [t for t in logged[seed] if t.startswith("evaluation/")]
        assert evaluation and all([s for s, _ in logged[seed][t]] == [0, 2, 4] for t in evaluation)
    with Store(tmp_path / "s.sqlite") as store:
        (stored,) = store.runs()
        curves = store.curves(stored["key"])
    for seed in (3, 4):  # the values are the seed's own curve as stored (a metric stored as None is not logged)
        stored_curve = {(f"evaluation/{k}", r["step"]): v for r in curves if r["seed"] == seed
                        for k, v in r.items() if k not in ("seed", "step") and v is not None}
        assert stored_curve == pytest.approx({(t, s): v for t, points in logged[seed].items()
                                              if t.startswith("evaluation/") for s, v in points}, rel=1e-6)
    assert logged[3] != logged[4]
    capsys.readouterr()
    assert main(args) == 0  # without --tensorboard: the same stored run, nothing trained again
    with Store(tmp_path / "s.sqlite") as store:
        assert len(store.runs()) == 1
    assert "tensorboard" not in stored["config"]["train"]
