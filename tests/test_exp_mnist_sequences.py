"""The mnist-count and mnist-sum experiments (Table 2): options, the mean predictor, cell diagnostics, summaries,
claims, the report, samples, grids and the command line. The data and task themselves: test_mnist_data.py and
test_mnist_sequences.py."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from mnist_fixtures import write_mnist_dir

from nalm.cli import main
from nalm.engine import NOT_REPRODUCED, NOT_RUN, REPRODUCED, ReportContext, RunSpec, get_experiment
from nalm.engine.task import seed_generators
from nalm.engine.train import TrainConfig, TrainResult
from nalm.errors import ConfigError
from nalm.experiments.mnist import counting as ms
from nalm.experiments.mnist.data import synthetic_mnist
from nalm.experiments.mnist.nets import DigitSequenceModel, SeedLoop, make_core

TINY = {"data": "synthetic", "digit_net": "small", "validation": 60, "validation_sequences": 8, "test_sequences": 6,
        "test_lengths": "1,10,100"}


def test_options_are_checked():
    for bad in ({"data": "cifar"}, {"digit_net": "resnet"}, {"hidden_size": 0}, {"core_learning_rate": -1.0},
                {"test_lengths": "0,10"}, {"loss_steps": "first"}):
        with pytest.raises(ConfigError):
            ms.MnistConfig(**bad)
    exp = get_experiment("mnist-sum")
    exp.check_model("nmu")  # any registered unit's cell
    with pytest.raises(ConfigError, match="transformer"):
        exp.check_model("transformer")
    spec = RunSpec("mnist-sum", "nau", {"mnist_dir": "/somewhere"}, TrainConfig())
    assert "mnist_dir" not in spec.resolved()["task"]  # where the data come from is not part of the results' key
    assert RunSpec("mnist-sum", "nau", {}).resolved() == RunSpec("mnist-sum", "nau", {"mnist_dir": "/x"}).resolved()
    names = {RunSpec(e, m, t).name for e in ("mnist-sum", "mnist-count") for m in ("nau", "lstm")
             for t in ({}, {"digit_net": "small"}, {"loss_steps": "last"}, {"digit_outputs": 10})}
    assert len(names) == 16 and RunSpec("mnist-sum", "nau", {"recurrent_init": "identity"}).name not in names
    for model in ("nac", "lstm"):  # an initialisation the core does not support fails before anything is stored
        with pytest.raises(ConfigError, match="recurrent_init"):
            RunSpec("mnist-sum", model, {"recurrent_init": "identity"})
    assert RunSpec("mnist-sum", "nau", {"recurrent_init": "identity"}).model == "nau"
    assert RunSpec("mnist-sum", "nau", {"digit_head": "softmax"}).name.endswith("/head-softmax")
    for bad in ({"recurrent_init": "accumulator", "digit_outputs": 10}, {"digit_head": "softmax", "digit_outputs": 10},
                {"digit_head": "argmax"}):
        with pytest.raises(ConfigError):
            RunSpec("mnist-sum", "nau", bad)


def test_synthetic_data_is_fixed_and_labelled():
    a, b = synthetic_mnist(50, 20), synthetic_mnist(50, 20)
    assert np.array_equal(a.train_images, b.train_images) and a.train_images.shape == (50, 28, 28)
    assert sorted(set(a.test_labels.tolist())) == list(range(10))
    with pytest.raises(ConfigError):
        synthetic_mnist(0, 10)


def test_mean_predictor_by_hand():
    exp = get_experiment("mnist-sum")
    task = exp.task(ms.MnistConfig(**TINY), [0])
    ref = task.reference()
    mean_digit = task.train_labels.double().mean()
    target, _ = task.targets("test10")  # (1, N, 1)
    assert math.isclose(ref["baseline_mae"]["test10"], float((target.double() - 10 * mean_digit).abs().mean()),
                        rel_tol=1e-12)
    assert math.isclose(ref["mean_target"]["test100"], float(task.targets("test100")[0].double().mean()), rel_tol=1e-12)
    count = get_experiment("mnist-count").task(ms.MnistConfig(**TINY), [0])
    freq = torch.bincount(count.train_labels.long(), minlength=10).double() / len(count.train_labels)
    target, _ = count.targets("test100")  # (1, N, 10)
    expected = float((target.double() - 100 * freq).abs().mean())
    assert math.isclose(count.reference()["baseline_mae"]["test100"], expected, rel_tol=1e-12)


def test_cell_weights_of_a_perfect_and_a_leaky_counter():
    model = DigitSequenceModel(SeedLoop(torch.nn.Identity, 2), make_core("nau", 3, num_seeds=2))
    w = torch.cat([torch.eye(3), torch.eye(3)], dim=1).repeat(2, 1, 1)
    w[1, 0, 4] = -0.25  # seed 1: one off-diagonal leak, and a diagonal of (1, 1, 0.7)
    w[1, 2, 5] = 0.7
    with torch.no_grad():
        model.core.cell.unit.weight.copy_(w)
    got = model.recurrent_weights()
    assert got[0] == {"recurrent_weight": 1.0, "recurrent_offdiagonal": 0.0}
    assert math.isclose(got[1]["recurrent_weight"], 2.7 / 3, rel_tol=1e-7) and got[1]["recurrent_offdiagonal"] == 0.25
    lstm = DigitSequenceModel(SeedLoop(torch.nn.Identity, 2), make_core("lstm", 3, num_seeds=2))
    assert lstm.recurrent_weights() == []


def test_summary_medians_ranges_and_non_finite_values():
    records = [{"seed": s, "diverged": s == 2, "best_step": 10, "success": None, "test1000_mae": v,
                "test1000_mae_init": 5.0, "test1_digit_accuracy": a}
               for s, (v, a) in enumerate([(3.0, 0.9), (1.0, float("nan")), (float("nan"), 0.5)])]
    result = TrainResult(records, [], None, 1.0, {"reference": {"baseline_mae": {"test1000": 70.0}}})
    s = get_experiment("mnist-sum").summarize(RunSpec("mnist-sum", "nau", {}), result)
    assert s["seeds"] == 3 and s["diverged"] == 1
    assert s["test1000_mae"] == 3.0 and s["test1000_mae_range"] == [1.0, math.inf]  # NaN: infinitely wrong
    assert s["test1_digit_accuracy"] == 0.5 and s["test1_digit_accuracy_range"] == [0.0, 0.9]  # NaN: never right
    assert "test1000_mae_init" not in s and s["baseline_mae"] == {"test1000": 70.0}


def summary(acc1, maes, mean=(4.5, 45.0, 450.0, 4500.0), base=(2.6, 7.3, 23.0, 73.0), **extra):
    s = {"seeds": 3, "diverged": 0, "test1_digit_accuracy": acc1, "test1_digit_accuracy_range": [acc1, acc1],
         "mean_target": {}, "baseline_mae": {}, **extra}
    for L, mae, m, b in zip((1, 10, 100, 1000), maes, mean, base):
        s.update({f"test{L}_mae": mae, f"test{L}_mae_range": [mae, 2 * mae], f"test{L}_exact": 0.5})
        s["mean_target"][f"test{L}"], s["baseline_mae"][f"test{L}"] = m, b
    s["validation_mae"], s["baseline_mae"]["validation"] = maes[1], base[1]
    return s


class FakeStore:
    def __init__(self, runs):
        self._runs = runs

    def runs(self, experiment=None):
        return [r for r in self._runs if experiment in (None, r["experiment"])]


def fake_run(experiment, model, s, seeds=3, **task):
    spec = RunSpec(experiment, model, {"digit_net": "small", **task},
                   TrainConfig(iterations=100, seeds=seeds, regularizers={}))
    return {"key": f"{experiment}/{model}/{seeds}", "experiment": experiment, "name": spec.name,
            "config": spec.resolved(), "summary": s}


def test_claims_answer_with_numbers(tmp_path):
    solved = summary(0.97, (0.1, 0.5, 3.0, 40.0))
    lstm = summary(0.95, (0.3, 1.0, 400.0, 4450.0))
    nalu_bad = summary(0.9, (0.2, 0.8, 60.0, 900.0))
    runs = [fake_run("mnist-sum", "nac", solved), fake_run("mnist-sum", "nalu", nalu_bad),
            fake_run("mnist-sum", "lstm", lstm), fake_run("mnist-sum", "rnn-tanh", summary(0.2, (2, 9, 400, 4490)))]
    ctx = ReportContext(FakeStore(runs), runs, tmp_path)
    fits, fail_long, fail_short, extrapolate = (c.check(ctx) for c in get_experiment("mnist-sum").claims)
    assert fits.answer == NOT_REPRODUCED and "RNN-tanh: MAE 9" in fits.evidence  # 9 > 7.3 / 4
    assert "not run: GRU, RNN-ReLU)" in fits.evidence
    assert fail_long.answer == REPRODUCED and "4450 at 1000 (99 % of the mean target)" in fail_long.evidence
    assert fail_short.answer == REPRODUCED and "20.0 %" in fail_short.evidence
    assert extrapolate.answer == NOT_REPRODUCED and "NALU: MAE 60 at 100 (13 %" in extrapolate.evidence
    empty = ReportContext(FakeStore([]), [], tmp_path)
    assert all(c.check(empty).answer == NOT_RUN for c in get_experiment("mnist-count").claims)
    # the strongest run of a model answers: 10 seeds of a solved NALU outweigh the 3 above
    runs.append(fake_run("mnist-sum", "nalu", solved, seeds=10))
    assert get_experiment("mnist-sum").claims[3].check(ReportContext(FakeStore(runs), runs, tmp_path)).answer == \
        REPRODUCED


NAU = {"recurrent_init": "accumulator", "digit_head": "softmax"}


def test_report_tables_and_figure(tmp_path):
    runs = [fake_run("mnist-count", "lstm", summary(0.95, (0.3, 0.2, 8.0, 95.0), mean=(0.1, 1, 10, 100),
                                                    base=(0.18, 0.8, 2.4, 7.5))),
            fake_run("mnist-count", "nau", summary(0.97, (0.1, 0.05, 0.4, 3.0), mean=(0.1, 1, 10, 100),
                                                   base=(0.18, 0.8, 2.4, 7.5), recurrent_weight=1.0), **NAU),
            fake_run("mnist-sum", "nau", summary(0.96, (0.1, 0.5, 3.0, 40.0)), **NAU)]
    count = [r for r in runs if r["experiment"] == "mnist-count"]
    lines = get_experiment("mnist-count").report(ReportContext(FakeStore(runs), count, tmp_path))
    text = "\n".join(lines)
    assert lines[0].startswith("## Table 2") and "Table 2 as in the paper" in text
    # both tasks side by side; the NAU row's design in its label
    assert "| NAU (accumulator init, softmax head) | 97.0 % | 0.05 | 0.4 | 3 | 96.0 % | 0.5 | 3 | 40 |" in text
    assert "| NAU (accumulator init, softmax head) | 3 | 97.0 |" in text
    assert "| LSTM | 3 | 95.0 | 0.2 [0.2–0.4] | 8 [8–16] | 95 [95–190] |" in text
    assert "| mean predictor |" in text and "1.0000" in text
    assert (tmp_path / "table2_mnist_count.png").stat().st_size > 10_000
    alone = get_experiment("mnist-sum").report(ReportContext(FakeStore(runs[2:]), runs[2:], tmp_path))
    assert "Table 2 as in the paper" not in "\n".join(alone) and (tmp_path / "table2_mnist_sum.png").exists()


def test_samples_are_the_models_data():
    exp = get_experiment("mnist-sum")
    config = ms.MnistConfig(**TINY)
    items = exp.sample(config, "train", 3, seed=4)
    task = exp.task(config, [4])
    positions = task.train_positions([g.bit_generator for g in seed_generators([4], "data")], 3)[0]
    assert [i["images"] for i in items] == positions.tolist()
    for item in items:
        assert item["digits"] == task.train_labels[torch.tensor(item["images"])].tolist()
        assert item["target"] == sum(item["digits"]) and item["length"] == 10
    test = get_experiment("mnist-count").sample(config, "test", 2, seed=0)
    assert test[0]["length"] == 100 and test[0]["target"] == np.bincount(test[0]["digits"], minlength=10).tolist()
    with pytest.raises(ConfigError):
        exp.sample(config, "holdout", 2, 0)


def test_grids_and_costs():
    for name in ("mnist-count", "mnist-sum"):
        exp = get_experiment(name)
        quick, paper = exp.grid("quick"), exp.grid("paper")
        assert {"lstm", "rnn-tanh", "nac", "nalu"} <= {s.model for s in quick}
        assert set(ms.MODELS) <= {s.model for s in paper}
        assert all(s.task_config().digit_net == "mnist2018" and s.train.seeds >= 10 for s in paper)
        assert exp.grid("acceptance") and exp.grid("nonsense") == []
        for spec in quick + exp.grid("acceptance"):  # one training protocol; the NAU row's own design
            c = spec.task_config()
            assert spec.train.lr_decay == 0.5
            assert (c.digit_head, c.recurrent_init) == (("softmax", "accumulator") if spec.model == "nau"
                                                        else ("linear", "unit"))
            assert set(spec.train.regularizers) == ({"nau"} if spec.model == "nau" else set())
        q, p = (sum(exp.cost(s) for s in g) for g in (quick, paper))
        assert 60 < q < 600 and p > 100 * q


def test_command_line_end_to_end(tmp_path, capsys):
    store = str(tmp_path / "s.sqlite")
    args = ["--seeds", "2", "--iterations", "2", "--eval-every", "2", "--batch-size", "4", "--store", store]
    opts = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    assert main(["run", "mnist-sum", "--model", "nac", *opts, *args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["seeds"] == 2 and {"test1_digit_accuracy", "test10_mae", "test100_mae", "test100_exact"} <= set(out)
    # the user's own IDX files; a broken folder is an error naming the file (exit 2)
    write_mnist_dir(tmp_path / "idx", 200, 100)
    opts = ["--digit-net=small", "--validation=40", "--validation-sequences=4", "--test-sequences=4",
            "--test-lengths=1,10"]
    assert main(["run", "mnist-count", "--model", "lstm", "--mnist-dir", str(tmp_path / "idx"), *opts, *args]) == 0
    capsys.readouterr()
    (tmp_path / "idx" / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01")
    assert main(["run", "mnist-count", "--model", "gru", "--mnist-dir", str(tmp_path / "idx"), *opts, *args]) == 2
    assert "t10k-labels-idx1-ubyte" in capsys.readouterr().err
    assert main(["sample", "mnist-sum", *[f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()], "--count", "2",
                 "--png", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 5_000
