"""The mnist-parity experiment (Table 4): config, data, task, seed axis, summary, claims, report, sample, CLI.

Everything runs on synthetic digits (no MNIST needed) or on a tiny IDX folder written by tests/mnist_fixtures.py.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nalm.cli import main
from nalm.engine import NOT_REPRODUCED, NOT_RUN, REPRODUCED, ReportContext, RunSpec, get_experiment, register_experiment
from nalm.engine.pooling import PooledStore
from nalm.engine.store import Store, config_key
from nalm.engine.task import torch_generators
from nalm.engine.train import TrainConfig, TrainResult, make_optimizer
from nalm.errors import ConfigError
from nalm.experiments.mnist import parity as mp
from nalm.experiments.mnist import parity_report
from nalm.experiments.mnist.parity_nets import ParityNet
from nalm.experiments.mnist.parity_task import ParityTask, synthetic_digits

sys.path.insert(0, str(Path(__file__).parent))
from mnist_fixtures import write_mnist_dir  # noqa: E402

SMALL = dict(mp.MnistParity.smoke)
TINY = TrainConfig(iterations=4, seeds=2, eval_every=2, batch_size=8, regularizers={})


@pytest.fixture(autouse=True)
def registered():
    """Importing nalm.experiments.mnist.parity registers it; another test may have removed it."""
    register_experiment(mp.MnistParity)


def config(**options):
    return mp.MnistParityConfig(**{**SMALL, **options})


# -- config and data ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("options", [dict(digits="emnist"), dict(digits="mnist", digit_size=8),
                                     dict(data_seed=-1), dict(held_out_digits=5_000),
                                     dict(max_digits=30), dict(canvas_size=4)])
def test_bad_configs(options):
    with pytest.raises(ConfigError):
        config(**options)


def test_mnist_dir_is_runtime_and_the_data_are_deterministic():
    spec = RunSpec("mnist-parity", "nac", {**SMALL, "mnist_dir": "/somewhere"}, TINY)
    assert "mnist_dir" not in spec.resolved()["task"]
    a = mp.load_splits.__wrapped__(config())
    b = mp.load_splits.__wrapped__(config())
    c = mp.load_splits.__wrapped__(config(data_seed=1))
    for split in ("train", "validation", "test"):
        assert np.array_equal(a[split].canvases, b[split].canvases)
        assert np.array_equal(a[split].targets, b[split].targets)
    assert not np.array_equal(a["train"].canvases, c["train"].canvases)
    assert [len(a[s].targets) for s in ("train", "validation", "test")] == [64, 24, 24]
    assert a["train"].canvases.shape[1:] == (32, 32) and a["train"].targets.max() <= 3


def test_canvases_follow_the_rules():
    """Digit count in range, centres at least min_distance apart, target = number of even digits."""
    data = mp.load_splits.__wrapped__(config(train_size=300))["train"]
    meta = data.meta
    assert set(meta.counts.tolist()) == {0, 1, 2, 3}
    for i in range(len(meta)):
        digits = meta.digits(i)
        assert data.targets[i] == sum(d % 2 == 0 for d, _ in digits)
        centres = [c for _, c in digits]
        assert all(math.dist(p, q) >= 8.0 for j, p in enumerate(centres) for q in centres[j + 1:])


def test_synthetic_digits():
    images, labels = synthetic_digits(50, 8, seed=3)
    again, _ = synthetic_digits(50, 8, seed=3)
    other, _ = synthetic_digits(50, 8, seed=3, index=1)
    assert images.shape == (50, 8, 8) and images.dtype == np.uint8 and np.array_equal(images, again)
    assert not np.array_equal(images, other)
    assert sorted(set(labels.tolist())) == list(range(10))
    # the bright square's place names the label: two images of one label share it, two labels do not
    bright = [frozenset(zip(*np.nonzero(im == 255))) for im in images]
    for i in range(50):
        for j in range(50):
            assert (bright[i] == bright[j]) == (labels[i] == labels[j])


def test_real_mnist_folder_is_read(tmp_path):
    write_mnist_dir(tmp_path, train=300, test=100)
    cfg = mp.MnistParityConfig(train_size=20, validation_size=10, test_size=10, held_out_digits=100,
                               mnist_dir=str(tmp_path))
    data = mp.load_splits.__wrapped__(cfg)
    assert data["train"].canvases.shape == (20, 100, 100) and data["test"].targets.max() <= 5


# -- task and model ----------------------------------------------------------------------------------------------
def test_task_batches_and_metrics():
    cfg = config()
    task = ParityTask(mp.load_splits(cfg), [0, 1], 4, chunk=7)
    x, y, _ = task.batch(1, None, 8)
    assert x.shape == (2, 8, 32, 32) and x.dtype == torch.uint8 and y.shape == (2, 8)
    assert not torch.equal(x[0], x[1])  # each seed its own order

    class Fixed(torch.nn.Module):  # seed 0 always answers class 0, seed 1 has uniform logits
        def forward(self, xs):
            n = xs.shape[1]
            logits = torch.zeros(2, n, 4)
            logits[0, :, 0] = 1
            return logits

    metrics = task.evaluate(Fixed(), 2)
    for split in ("train", "validation", "test"):
        _, targets = task.sets[split]
        share0 = float((targets == 0).double().mean())
        assert metrics[f"{split}_accuracy"][0].item() == pytest.approx(share0)
        assert metrics[f"{split}_error"][0].item() == pytest.approx(1 - share0)
        assert metrics[f"{split}_loss"][1].item() == pytest.approx(math.log(4))  # uniform logits
    assert set(task.artifacts(None)["references"]) == {"majority", "uniform", "prior"}


def test_rows_share_the_body_of_each_seed():
    """After the trainer's initialisation, seed i's body is the same in every row; seeds differ."""
    cfg = config()
    exp = get_experiment("mnist-parity")
    bodies = {}
    for final in mp.ROWS:
        model = exp.model(cfg, final, 2)
        model.reset_parameters(torch_generators([3, 4], "init"))
        bodies[final] = {k: v for k, v in model.state_dict().items() if ".final." not in k}
    ref = bodies["affine"]
    assert not torch.equal(ref["stacked.conv1.weight"][0], ref["stacked.conv1.weight"][1])
    for final, body in bodies.items():
        assert body.keys() == ref.keys()
        assert all(torch.equal(v, ref[k]) for k, v in body.items()), final
    # and seed 4 of a 2-seed run starts as a single model drawn from seed 4's stream alone
    single = exp.model(cfg, "nac", 1)
    single.reset_parameters(torch_generators([4], "init"))
    model = exp.model(cfg, "nac", 2)
    model.reset_parameters(torch_generators([3, 4], "init"))
    for k, v in single.state_dict().items():
        assert torch.equal(v[0], model.state_dict()[k][1]), k


@pytest.mark.parametrize("final", mp.ROWS)
def test_every_row_trains(final):
    cfg = config()
    exp = get_experiment("mnist-parity")
    task, model = exp.task(cfg, [0, 1]), exp.model(cfg, final, 2)
    model.reset_parameters(torch_generators([0, 1], "init"))
    opt = make_optimizer(model, 3e-3)
    x, y, _ = task.batch(1, None, 8)
    loss = task.loss(model(x), y)
    assert loss.shape == (2,) and torch.isfinite(loss).all()
    opt.zero_grad()
    loss.sum().backward()
    opt.step()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert isinstance(model.stacked, ParityNet) and model.stacked.final_name == final


# -- summary, claims and report ----------------------------------------------------------------------------------
def test_summary():
    recs = [{"seed": s, "diverged": s == 2, "best_step": 10 * s, "test_accuracy": a, "test_error": 1 - a,
             "validation_accuracy": a, "train_accuracy": a} for s, a in enumerate([0.8, 0.9, 0.6])]
    spec = RunSpec("mnist-parity", "nac", SMALL, TINY)
    s = get_experiment("mnist-parity").summarize(spec, TrainResult(recs, [], None, 1.0, {"references": {"x": 1}}))
    assert s["seeds"] == 3 and s["diverged"] == 1 and s["best_step"] == 10
    assert s["test_accuracy"] == 0.8 and s["test_accuracy_min"] == 0.6 and s["test_accuracy_max"] == 0.9
    assert s["test_error"] == pytest.approx(0.2) and s["references"] == {"x": 1}
    json.dumps(s)


def _fake_store(path, errors: dict[str, list[float]], iterations: int = 100, store=None, first_seed: int = 0):
    """A store with one finished run per row; seed first_seed + i of row m has test error errors[m][i]."""
    store = store or Store(path)
    exp = get_experiment("mnist-parity")
    for model, errs in errors.items():
        spec = RunSpec("mnist-parity", model, {}, TrainConfig(iterations=iterations, seeds=len(errs),
                                                              first_seed=first_seed, regularizers={}))
        key = config_key(spec.resolved())
        store.start_run(key, "mnist-parity", spec.name, spec.resolved())
        recs = [{"seed": first_seed + i, "diverged": False, "best_step": 100, "test_error": e, "test_accuracy": 1 - e,
                 "validation_accuracy": 1 - e, "train_accuracy": 1 - e} for i, e in enumerate(errs)]
        result = TrainResult(recs, [], None, 1.0, {"references": {"majority": 0.34, "uniform": 1 / 6,
                                                                  "prior": 0.26}})
        store.finish_run(key, recs, exp.summarize(spec, result), 1.0, result.artifacts)
    return store


def _verdicts(store, folder):
    store = PooledStore(store)  # as the report reads it: runs that differ only in their seeds are one
    ctx = ReportContext(store, store.runs("mnist-parity"), folder)
    return ctx, [c.check(ctx) for c in get_experiment("mnist-parity").claims]


def test_claims_follow_the_numbers(tmp_path):
    paper_like = {"affine": [0.12, 0.14, 0.13], "affine-nobias": [0.11, 0.12, 0.125], "tanh": [0.10, 0.11, 0.09],
                  "sigmoid": [0.10, 0.10, 0.115], "nac": [0.06, 0.07, 0.05]}
    with _fake_store(tmp_path / "a.sqlite", paper_like) as store:
        ctx, verdicts = _verdicts(store, tmp_path)
        assert [v.answer for v in verdicts] == [REPRODUCED] * 4
        assert "a cut of 54 % (paper: a cut of 54 %" in verdicts[1].evidence
        assert "13.0 % → 6.0 %" in verdicts[1].evidence
        lines = get_experiment("mnist-parity").report(ctx)
        text = "\n".join(lines)
        assert lines[0].startswith("## Table 4") and "| NAC (tanh(Ŵ) ⊙ σ(M̂)) h | 3 | 94.0 [93.0, 95.0] | 6.0 |" \
            in text
        assert "−54 % [−62, −50]" in text and "34.0 %" in text and "**reproduced**" in text
        assert (tmp_path / "table4_mnist_parity.png").read_bytes()[:4] == b"\x89PNG"

    worse = {"affine": [0.10, 0.10, 0.10], "affine-nobias": [0.12, 0.09, 0.13], "nac": [0.095, 0.13, 0.12]}
    with _fake_store(tmp_path / "b.sqlite", worse) as store:
        _, verdicts = _verdicts(store, tmp_path)
        assert [v.answer for v in verdicts] == [NOT_REPRODUCED] * 4
        assert "lower on 1 of 3 paired seeds" in verdicts[0].evidence and "a rise of 20 %" in verdicts[1].evidence

    with Store(tmp_path / "c.sqlite") as store:
        _, verdicts = _verdicts(store, tmp_path)
        assert [v.answer for v in verdicts] == [NOT_RUN] * 4


def test_the_budgets_controlled_run_answers_why_and_leaves_table_4_alone(tmp_path):
    table4 = {"affine": [0.15, 0.15, 0.15], "affine-nobias": [0.14, 0.14, 0.14], "tanh": [0.13, 0.13, 0.13],
              "sigmoid": [0.13, 0.13, 0.13], "nac": [0.14, 0.14, 0.14]}
    for k, (longer, why, change) in enumerate((
            ({"affine": [0.10] * 3, "nac": [0.09] * 3}, "Not the budget: with 5× the steps", "a cut of 10 %"),
            ({"affine": [0.10] * 3, "nac": [0.12] * 3}, "Not the budget: with 5× the steps", "a rise of 20 %"),
            ({"affine": [0.10] * 3, "nac": [0.05] * 3}, "The budget: with 5× the steps", "a cut of 50 %"))):
        with _fake_store(tmp_path / f"{k}.sqlite", table4) as store:
            _fake_store(None, longer, iterations=500, store=store)
            _, (lowest, cut, bias, constraints) = _verdicts(store, tmp_path)
            # Table 4's claims read the setting with all five rows, not the longer run of two
            assert lowest.answer == cut.answer == NOT_REPRODUCED and "15.0 % → 14.0 %" in cut.evidence
            assert bias.answer == REPRODUCED and constraints.answer == NOT_REPRODUCED
            assert lowest.why == cut.why and cut.why.startswith(why)
            assert f"15.0 % → 14.0 % at 100 steps (a cut of 7 %), 10.0 % → {100 * longer['nac'][0]:.1f} % at 500 " \
                f"steps ({change})" in cut.why
            assert "mnist-parity affine and nac, 3 seeds × 500 steps" in cut.why and constraints.why == ""
    with _fake_store(tmp_path / "d.sqlite", table4) as store:
        assert _verdicts(store, tmp_path)[1][1].why == ""  # no longer run: no cause claimed


def test_the_replication_tells_seed_noise_from_a_real_difference(tmp_path):
    first = {"affine": [0.15] * 5, "affine-nobias": [0.14] * 5, "tanh": [0.13, 0.13, 0.15, 0.13, 0.15],
             "sigmoid": [0.15, 0.13, 0.15, 0.15, 0.15], "nac": [0.15] * 5}
    # tanh flips between the halves (noise); σ(M̂) and the NAC lose on nearly every seed (real)
    fresh = {"affine": [0.15] * 5, "affine-nobias": [0.14] * 5, "tanh": [0.15, 0.15, 0.13, 0.15, 0.15],
             "sigmoid": [0.15] * 5, "nac": [0.15] * 5}
    with _fake_store(tmp_path / "a.sqlite", first) as store:
        constraints = _verdicts(store, tmp_path)[1][3]
        assert constraints.answer == NOT_REPRODUCED and constraints.why == ""  # one seed set: no replication
        _fake_store(None, fresh, store=store, first_seed=5)
        lowest, cut, bias, constraints = _verdicts(store, tmp_path)[1]
        assert "of 10 paired seeds" in constraints.evidence and bias.answer == REPRODUCED
        assert constraints.why.startswith("Seed noise: the rows differ by less than the seeds' spread (tanh lower "
                                          "than affine-nobias on 3 of 5 on seeds 0–4 and 1 of 5 on seeds 5–9, "
                                          "paired difference +1.0 points [−1.0, +1.0], sign test p = 0.75).")
        assert "Not seed noise: a real difference in this setting (sigmoid lower than affine-nobias on 1 of 5 on " \
            "seeds 0–4 and 0 of 5 on seeds 5–9, paired difference +1.0 points [−1.0, +1.0], sign test p = 0.02" in \
            constraints.why
        assert "nac lower than affine-nobias on 0 of 5 on seeds 0–4 and 0 of 5 on seeds 5–9" in constraints.why
        assert "p = 0.00" in constraints.why and constraints.why.endswith(
            "Run: mnist-parity, Table 4's rows on seeds 0–9 (the acceptance seeds and their replication, pooled) × "
            "100 steps.")
        # rows that tie on every seed cannot be told apart
        assert lowest.answer == NOT_REPRODUCED and "nac lower than affine on 0 of 5 on seeds 0–4 and 0 of 5 on seeds " \
            "5–9, paired difference +0.0 points [+0.0, +0.0], sign test p = 1.00" in lowest.why
        assert cut.why.startswith("Not seed noise: no seed's paired cut reaches even half of the paper's 54 % "
                                  "(per-seed cuts +0.0 % to +0.0 % over 10 paired seeds; mnist-parity, Table 4's "
                                  "rows on seeds 0–9")
    with _fake_store(tmp_path / "b.sqlite", first) as store:  # the NAC cuts a third of the error on seeds 5-9 only
        _fake_store(None, {**fresh, "nac": [0.10] * 5}, store=store, first_seed=5)
        cut = _verdicts(store, tmp_path)[1][1]
        assert cut.answer == NOT_REPRODUCED and "15.0 % → 12.5 %" in cut.evidence
        assert cut.why.startswith("Seed-dependent: 5 of 10 seeds reach a cut of 27 %, the median does not (per-seed "
                                  "cuts +0.0 % to "
                                  "+33.3 % over 10 paired seeds")
    assert [parity_report._sign_test(w, 10) for w in (5, 2, 1, 0)] == pytest.approx(
        [1.0, 112 / 1024, 22 / 1024, 2 / 1024])


# -- profiles, sample and the command line -------------------------------------------------------------------------
def test_grids_and_cost():
    exp = get_experiment("mnist-parity")
    quick, acceptance, paper = (exp.grid(p) for p in ("quick", "acceptance", "paper"))
    assert [s.model for s in quick] == list(mp.PAPER_ROWS)
    assert [s.model for s in acceptance] == [*mp.PAPER_ROWS, *mp.PAPER_ROWS, *mp.BUDGET_ROWS]
    assert all(s.train.seeds >= 5 for s in acceptance[:10]) and len({s.name for s in paper}) == len(paper)
    # the replication: the same rows on the next seeds, so that the report pools them
    assert [s.train.first_seed for s in acceptance[:10]] == [0] * 5 + [5] * 5
    assert [(s.train.seeds, s.train.iterations) for s in acceptance[10:]] == [(3, 10_000)] * 2  # the budget's run
    assert sum(map(exp.cost, quick)) < 15 * 60 < sum(map(exp.cost, acceptance)) < 3 * 3600
    assert sum(map(exp.cost, paper)) > 24 * 3600


def test_sample_and_png(tmp_path):
    exp = get_experiment("mnist-parity")
    cfg = config()
    items = exp.sample(cfg, "test", 3, 0)
    data = mp.load_splits(cfg, ("test",))["test"]
    for i, item in enumerate(items):
        assert item["index"] == i and item["target"] == int(data.targets[i])
        assert item["target"] == sum(d % 2 == 0 for d in item["digits"]) and len(item["centres"]) == len(item["digits"])
        assert len(item["canvas"].strip("\n").split("\n")) == 8  # 32 px / 4 rows per character
    first = [it["index"] for it in exp.sample(cfg, "train", 4, 1)]
    assert first != [it["index"] for it in exp.sample(cfg, "train", 4, 2)]  # each seed's own first batch
    exp.write_png(cfg, "train", 4, 1, tmp_path / "g.png")
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_run_prints_accuracy_and_error(tmp_path, capsys):
    opts = ["--digits", "synthetic", "--digit-size", "8", "--canvas-size", "32", "--max-digits", "3",
            "--min-distance", "8", "--train-size", "64", "--validation-size", "16", "--test-size", "16",
            "--held-out-digits", "200"]
    assert main(["run", "mnist-parity", "--model", "nac", "--seeds", "3", "--iterations", "4", "--eval-every", "2",
                 "--json", "--store", str(tmp_path / "s.sqlite"), *opts]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["seeds"] == 3 and 0 <= out["test_accuracy"] <= 1
    assert out["test_error"] == pytest.approx(1 - out["test_accuracy"])
    assert main(["sample", "mnist-parity", "--count", "2", "--png", str(tmp_path / "p.png"), *opts]) == 0
    assert "target" in capsys.readouterr().out and (tmp_path / "p.png").exists()
