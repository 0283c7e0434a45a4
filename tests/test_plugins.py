"""Experiments as plug-ins: every registered experiment end to end, a toy experiment registered from the tests,
leases between processes, per-seed gradient clipping, fixed data sets, devices, and stores that must be refused."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from nalm import DataError
from nalm.cli import main
from nalm.engine import (NOT_RUN, ReportContext, RunSpec, Verdict, get_experiment, list_experiments, resolve_device,
                         run, unregister_experiment)
from nalm.engine.metrics import per_seed_cross_entropy
from nalm.engine.store import Store, config_key
from nalm.engine.task import seed_order
from nalm.engine.train import Hooks, TrainConfig, clip_grad_norm_per_seed, make_optimizer, training_step
from nalm.nn.models import build_model

TESTS = Path(__file__).parent
TINY = TrainConfig(iterations=4, seeds=2, eval_every=2, batch_size=8, learning_rate=1e-2, regularizers={})


@pytest.fixture
def toy():
    """Register the toy experiment of tests/toy_experiment.py for one test, then remove it again."""
    sys.path.insert(0, str(TESTS))
    import toy_experiment  # noqa: F401  (registers on import)

    from nalm.engine import register_experiment

    register_experiment(toy_experiment.Toy)
    yield toy_experiment
    unregister_experiment("toy-sum")
    sys.path.remove(str(TESTS))


@pytest.mark.parametrize("name", list_experiments())
def test_every_experiment_builds_trains_samples_and_reports(name, tmp_path):
    """2 seeds, a few steps: build, train, evaluate, summarise, sample every split, render the report section."""
    exp = get_experiment(name)
    spec = RunSpec(name, exp.default_model, dict(exp.smoke), TINY)
    with Store(tmp_path / "s.sqlite") as store:
        summary = run(spec, store)
        key = config_key(spec.resolved())
        seeds = store.seeds(key)
        assert [s["seed"] for s in seeds] == [0, 1] and summary["seeds"] == 2
        assert {s["best_step"] for s in seeds} <= {0, 2, 4}
        json.dumps(summary)
        ctx = ReportContext(store, store.runs(name), tmp_path)
        lines = exp.report(ctx)
        assert lines and lines[0].startswith("## ")
        for claim in exp.claims:
            assert isinstance(claim.check(ctx), Verdict)
    config = spec.task_config()
    for split in exp.splits:
        items = exp.sample(config, split, 2, 0)
        assert len(items) == 2 and all(isinstance(i, dict) and i for i in items)
        json.dumps(items)
    assert exp.grid("quick"), f"{name} has no quick profile"


def test_a_registered_toy_appears_everywhere(toy, tmp_path, capsys):
    assert "toy-sum" in list_experiments()
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "toy-sum" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["reproduce", "--help"])
    assert "toy-sum" in "".join(capsys.readouterr().out.split())  # argparse may wrap the line at the hyphen
    store = str(tmp_path / "s.sqlite")
    assert main(["run", "toy-sum", "--model", "nau", "--seeds", "3", "--json", "--store", store]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["seeds"] == 3 and result["success_rate"] == 1.0  # a NAU finds x1 + x2 and extrapolates it
    assert main(["sample", "toy-sum", "--split", "test", "--count", "3", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 3 and all(abs(sum(r["x"]) - r["target"]) < 1e-5 and min(r["x"]) >= 1 for r in rows)
    assert main(["reproduce", "--only", "toy-sum", "--jobs", "1", "--no-progress", "--store", store]) == 0
    with Store(store) as s:
        assert len(s.runs("toy-sum")) == 6 + 1
    assert main(["report", "--store", store, "--out", str(tmp_path / "r.md")]) == 0
    text = (tmp_path / "r.md").read_text()
    assert "## Toy sum" in text and "| toy-sum | The NAU extrapolates the sum. | **reproduced** |" in text
    assert "| identity |" in text and "**not run**" in text  # every registered experiment's claims are listed
    assert main(["export", str(tmp_path / "t.csv"), "--experiment", "toy-sum", "--store", store]) == 0


def test_two_reproduce_processes_never_train_one_run_twice(toy, tmp_path):
    """Two `nalm reproduce` on one store at once: every run is trained exactly once, and both finish."""
    log, store = tmp_path / "trained.log", tmp_path / "s.sqlite"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NALM_EXPERIMENTS": "toy_experiment", "TOY_LOG": str(log),
           "TOY_SLEEP": "0.5", "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "nalm", "reproduce", "--only", "toy-sum", "--jobs", "1", "--no-progress",
           "--store", str(store)]
    procs = [subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE) for _ in range(2)]
    errs = [p.communicate(timeout=180)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    lines = log.read_text().split("\n")[:-1]
    names = [line.split()[1] for line in lines]
    assert sorted(names) == sorted(set(names)) and len(names) == 6, lines  # each of the 6 runs trained once
    assert len({line.split()[0] for line in lines}) == 2, "only one process did any work"
    with Store(store) as s:
        assert len(s.runs("toy-sum")) == 6
        assert s.conn.execute("SELECT COUNT(*) FROM leases").fetchone()[0] == 0


def test_leases(tmp_path):
    path = tmp_path / "s.sqlite"
    with Store(path) as store:
        assert store.acquire("k") is None and store.acquire("k") is None  # ours, renewed
        finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
        dead = int(finished.stdout)
        import socket
        import time

        def hold(pid, age):
            with store.conn:
                store.conn.execute("UPDATE leases SET owner = ?, pid = ?, host = ?, heartbeat = ? WHERE key = 'k'",
                                   (f"other:{pid}", pid, socket.gethostname(), time.time() - age))

        hold(os.getppid(), 0)  # a live process (our parent), fresh heartbeat: busy
        holder = store.acquire("k")
        assert holder is not None and holder["pid"] == os.getppid()
        hold(os.getppid(), 10_000)  # silent for too long: taken over
        assert store.acquire("k") is None
        hold(dead, 0)  # its owner on this host is dead: taken over at once
        assert store.acquire("k") is None
        store.release("k")
        assert store.conn.execute("SELECT COUNT(*) FROM leases").fetchone()[0] == 0


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _nalm_store(path: Path) -> None:
    with Store(path) as store:
        store.start_run("k", "arithmetic", "x", {"a": 1})
        store.finish_run("k", [{"seed": 0, "diverged": False, "interpolation_mse": 1.0, "accuracy": 0.5}], {}, 1.0)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = DELETE")  # one self-contained file, as a copied store would be
    conn.close()


@pytest.mark.parametrize("kind", ["not sqlite", "foreign sqlite", "truncated", "newer schema"])
def test_bad_stores_are_refused_and_left_untouched(kind, tmp_path, capsys):
    path = tmp_path / "bad.sqlite"
    if kind == "not sqlite":
        path.write_bytes(b"these are my notes, not a database\n" * 200)
    elif kind == "foreign sqlite":
        conn = sqlite3.connect(path)
        with conn:
            conn.execute("CREATE TABLE accounts (name TEXT, balance REAL)")
            conn.execute("INSERT INTO accounts VALUES ('a', 1.0)")
        conn.close()
    else:
        _nalm_store(path)
        if kind == "truncated":
            data = path.read_bytes()
            path.write_bytes(data[: len(data) * 2 // 3])
        else:
            conn = sqlite3.connect(path)
            with conn:
                conn.execute("UPDATE meta SET value = '99' WHERE name = 'schema_version'")
            conn.close()
    before = _digest(path)
    with pytest.raises(DataError, match="bad.sqlite"):
        Store(path)
    assert main(["report", "--store", str(path), "--out", str(tmp_path / "r.md")]) == 2
    assert "bad.sqlite" in capsys.readouterr().err
    assert main(["run", "arithmetic", "--input-size", "10", "--iterations", "2", "--store", str(path)]) == 2
    assert _digest(path) == before and not (tmp_path / "bad.sqlite-wal").exists()


def test_schema_1_store_is_upgraded(tmp_path):
    path = tmp_path / "old.sqlite"
    _nalm_store(path)
    with sqlite3.connect(path) as conn:  # back to schema 1: no metrics columns, no leases, no application id
        conn.executescript("ALTER TABLE seeds DROP COLUMN metrics; ALTER TABLE curves DROP COLUMN metrics; "
                           "DROP TABLE leases; UPDATE meta SET value = '1'; PRAGMA application_id = 0;")
    with Store(path) as store:
        assert store.seeds("k")[0]["interpolation_mse"] == 1.0
        assert store.conn.execute("SELECT value FROM meta").fetchone()[0] == "2"
        assert store.acquire("k") is None


def test_experiment_values_beyond_the_fixed_columns_round_trip(tmp_path):
    path = tmp_path / "s.sqlite"
    _nalm_store(path)
    with Store(path) as store:
        row = store.seeds("k")[0]
        assert row["accuracy"] == 0.5 and row["interpolation_mse"] == 1.0
        assert store.export(tmp_path / "e.csv") == 1
    assert "accuracy" in (tmp_path / "e.csv").read_text().splitlines()[0]


def test_gradient_clipping_is_per_seed():
    """Scaling one seed's gradients by 10⁶ does not change another seed's update."""
    updates = []
    for scale in (1.0, 1e6):
        model = build_model("nau-nau", 4, num_seeds=2, hidden_size=2)
        model.reset_parameters([torch.Generator().manual_seed(s) for s in (0, 1)])
        opt = make_optimizer(model, 0.1, "sgd")
        x = torch.rand(2, 8, 4, generator=torch.Generator().manual_seed(3))
        y = x.sum(-1, keepdim=True) * torch.tensor([1.0, scale]).view(2, 1, 1)  # seed 1's error (and gradient) × 10⁶
        before = [p.detach().clone() for p in model.parameters()]
        training_step(model, opt, x, y, 1, Hooks([], []), torch.ones(2, dtype=torch.bool), grad_clip=1.0)
        updates.append([(p.detach() - b) for p, b in zip(model.parameters(), before)])
    for a, b in zip(*updates):
        assert torch.equal(a[0], b[0])  # seed 0 untouched by seed 1's scale
    norms = [torch.cat([u[1].flatten() for u in upd]).norm() for upd in updates]
    assert norms[1] <= 0.1 * 1.0 + 1e-6  # seed 1's step is clipped: lr × max_norm


def test_clip_needs_the_seed_axis():
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.ones(3)
    with pytest.raises(Exception, match="seed axis"):
        clip_grad_norm_per_seed([p], 1.0, 2)


def test_seed_order_walks_a_new_permutation_each_epoch():
    a = seed_order([0, 1], 1, 4, 10)
    assert a.shape == (2, 4) and not (a[0] == a[1]).all()
    epoch = [seed_order([0], s, 4, 10)[0] for s in (1, 2)]  # 2 batches per epoch (the partial one dropped)
    assert len(set(map(int, epoch[0])) | set(map(int, epoch[1]))) == 8
    assert (seed_order([0], 3, 4, 10) != seed_order([0], 1, 4, 10)).any()  # epoch 2 reshuffles
    assert (seed_order([1], 1, 4, 10)[0] == a[1]).all()  # a seed's order does not depend on the others


def test_cross_entropy_is_per_seed():
    logits, labels = torch.randn(3, 5, 4), torch.randint(0, 4, (3, 5))
    expected = torch.stack([torch.nn.functional.cross_entropy(logits[i], labels[i]) for i in range(3)])
    assert torch.allclose(per_seed_cross_entropy(logits, labels), expected)


def test_devices(capsys, tmp_path):
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device("auto").type in ("cpu", "cuda")
    for bad in ("cuda:99", "tpu", "cuda:x"):
        with pytest.raises(Exception, match="device"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        assert main(["run", "arithmetic", "--device", "cuda", "--store", str(tmp_path / "s.sqlite")]) == 2
        assert "no CUDA device" in capsys.readouterr().err
        assert not (tmp_path / "s.sqlite").exists()


def test_python_dash_m_nalm():
    out = subprocess.run([sys.executable, "-m", "nalm", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("nalm ")


def test_bad_plugin_is_a_clear_error(tmp_path):
    env = {**os.environ, "NALM_EXPERIMENTS": "no_such_module_here"}
    out = subprocess.run([sys.executable, "-m", "nalm", "run", "--help"], capture_output=True, text=True, env=env)
    assert out.returncode == 2 and "no_such_module_here" in out.stderr


def test_identity_curve_of_seed_blocks_equals_one_block():
    """Figure 1's curve merged from two blocks of seeds equals the curve of the four seeds trained together."""
    exp = get_experiment("identity")
    whole = RunSpec("identity", "relu6", dict(exp.smoke), replace(TINY, seeds=4))
    blocks = [RunSpec("identity", "relu6", dict(exp.smoke), replace(TINY, seeds=2, first_seed=f)) for f in (0, 2)]
    expected = exp.train(whole).artifacts
    merged = exp.merge_artifacts(whole, [(b, exp.train(b).artifacts) for b in blocks], None)
    assert merged["error_curve"]["models"] == expected["error_curve"]["models"] == 4
    assert merged["error_curve"]["mae"] == pytest.approx(expected["error_curve"]["mae"], rel=1e-6)
    assert merged["summary"]["mae_outside"] == pytest.approx(expected["summary"]["mae_outside"], rel=1e-6)
