"""The recurrent arithmetic task (issue 14): running targets, varying lengths, the recurrent threshold, the
sequence models that return every step, and the experiment's grids, claims, summary, samples and report."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nalm import ConfigError, ShapeError
from nalm.engine import NOT_REPRODUCED, NOT_RUN, REPRODUCED, ReportContext, RunSpec, get_experiment
from nalm.engine.task import seed_generators
from nalm.engine.train import TrainConfig, train
from nalm.experiments.arithmetic.task import RecurrentArithmeticConfig, RecurrentArithmeticTask
from nalm.experiments.arithmetic.thresholds import success_threshold
from nalm.nn.models import SeedRNN, SequenceModel, build_model

SMALL = dict(evaluation_size=40, test_length=60, short_test_length=20)


def bitgens(seeds):
    return [g.bit_generator for g in seed_generators(seeds, "data")]


def exact_nau(task: RecurrentArithmeticTask, op_head: tuple[float, float], eps: float = 0.0) -> SequenceModel:
    """The NAU cell that is exact for ``task`` (state (a, b), recurrent identity) and an NAU head, every seed;
    ``eps`` is added to every weight of the state a (a pattern that neither a + b nor a − b cancels)."""
    S, n = len(task.seeds), task.input_size
    model = build_model("nau-nau", n, 1, num_seeds=S, recurrent=True)
    with torch.no_grad():
        w = torch.zeros(S, 2, n + 2)
        w[:, :, :n] = task._masks
        w[:, :, n:] = torch.eye(2)
        w[:, 0] += eps
        model.body.unit.weight.copy_(w)
        model.head.weight.copy_(torch.tensor(op_head).expand(S, 1, 2))
    return model


# -- the configuration ------------------------------------------------------------------------------------------------
def test_config_defaults_and_validation():
    c = RecurrentArithmeticConfig()
    assert (c.input_size, c.subset_size, c.overlap_size, c.train_length, c.min_train_length) == (10, 4, 2, 10, 1)
    assert (c.loss_steps, c.test_length, c.short_test_length, c.evaluation_size) == ("all", 1000, 100, 1000)
    assert c.interpolation_range == c.extrapolation_range == "-1,1"
    for bad, word in (({"min_train_length": 11}, "min_train_length"), ({"short_test_length": -1}, "short_test"),
                      ({"loss_steps": "every"}, "loss_steps"), ({"test_length": 0}, "test_length"),
                      ({"operation": "root"}, "root")):
        with pytest.raises(ConfigError, match=word):
            RecurrentArithmeticConfig(**bad)
    assert c.short_length == 100 and RecurrentArithmeticConfig(test_length=50).short_length == 0  # none: not shorter


# -- data, targets, loss ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["add", "sub", "mul", "squared"])
def test_running_targets_are_op_of_the_sums_so_far(op):
    task = RecurrentArithmeticTask(RecurrentArithmeticConfig(operation=op, **SMALL), [0, 1])
    x, (y, weights), _ = task.sample(bitgens([0, 1]), 5)
    assert x.shape == (2, 5, 10, 10) and y.shape == (2, 5, 10, 1) and weights is None
    assert x.min() >= -1 and x.max() < 1
    for s in range(2):
        m = task._masks[s].double()
        a = (x[s].double().cumsum(1) * m[0]).sum(-1)
        b = (x[s].double().cumsum(1) * m[1]).sum(-1)
        torch.testing.assert_close(y[s, ..., 0].double(), task.op(a, b), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(task.final_targets(x, 10)[..., 0], y[:, :, -1, 0].double(), rtol=1e-5, atol=1e-5)


def test_seed_batches_equal_single_seed_batches():
    cfg = RecurrentArithmeticConfig(loss_steps="last", **SMALL)
    x2, (y2, w2), _ = RecurrentArithmeticTask(cfg, [3, 4]).sample(bitgens([3, 4]), 6)
    x1, (y1, w1), _ = RecurrentArithmeticTask(cfg, [4]).sample(bitgens([4]), 6)
    assert torch.equal(x2[1], x1[0]) and torch.equal(y2[1], y1[0]) and torch.equal(w2[1], w1[0])


def test_varying_lengths_weigh_one_step_per_row():
    cfg = RecurrentArithmeticConfig(loss_steps="last", min_train_length=3, train_length=8, **SMALL)
    task = RecurrentArithmeticTask(cfg, [0, 1])
    x, (y, w), _ = task.sample(bitgens([0, 1]), 500)
    assert w.shape == (2, 500, 8) and torch.equal(w.sum(-1), torch.ones(2, 500))
    lengths = w.argmax(-1) + 1
    assert lengths.min() == 3 and lengths.max() == 8  # all of 3..8 drawn, nothing shorter
    out = torch.zeros_like(y)
    expected = torch.stack([(y[s, torch.arange(500), lengths[s] - 1, 0] ** 2).mean() for s in range(2)])
    torch.testing.assert_close(task.loss(out, (y, w)), expected)
    # fixed length, loss at the last step only: no weights, the error of step T
    fixed = RecurrentArithmeticTask(RecurrentArithmeticConfig(loss_steps="last", min_train_length=8, train_length=8,
                                                              **SMALL), [0])
    x, (y, w), _ = fixed.sample(bitgens([0]), 4)
    assert w is None and fixed.loss(torch.zeros_like(y), (y, w)) == pytest.approx(float((y[0, :, -1] ** 2).mean()))
    # every step from min_train_length: the mean over those steps
    every = RecurrentArithmeticTask(RecurrentArithmeticConfig(min_train_length=4, **SMALL), [0])
    x, (y, w), _ = every.sample(bitgens([0]), 4)
    assert every.loss(torch.zeros_like(y), (y, w)) == pytest.approx(float((y[0, :, 3:] ** 2).mean()))


@pytest.mark.parametrize("op,head", [("add", (1.0, 1.0)), ("sub", (1.0, -1.0))])
def test_exact_cell_extrapolates_and_a_perturbed_one_is_near_the_threshold(op, head):
    cfg = RecurrentArithmeticConfig(operation=op, evaluation_size=200, test_length=300, short_test_length=30)
    task = RecurrentArithmeticTask(cfg, [0, 1])
    metrics = task.evaluate(exact_nau(task, head), 2)
    assert set(metrics) >= {"interpolation_mse", "extrapolation_mse", "extrapolation_short_mse", "mse_at_300",
                            "mse_at_30", "mse_at_1", "sparsity_error"}
    assert float(metrics["extrapolation_mse"].max()) < 1e-7 and float(metrics["sparsity_error"].max()) == 0
    assert torch.equal(metrics["extrapolation_mse"], metrics["mse_at_300"])
    threshold = success_threshold(cfg, samples=4_000, recurrent=True)
    # the weights of a off by 1e-4 (the recurrent error compounds over the steps): above the threshold of ε = 1e-5 ...
    worse = task.evaluate(exact_nau(task, head, eps=1e-4), 2)["extrapolation_mse"]
    assert float(worse.min()) > threshold
    # ... and the threshold is well above float32 rounding of the exact cell
    assert threshold > 1e3 * float(metrics["extrapolation_mse"].max())


def test_overflow_at_length_is_inf_not_divergence():
    cfg = RecurrentArithmeticConfig(**SMALL)
    task = RecurrentArithmeticTask(cfg, [0])
    model = build_model("nau-nau", 10, 1, num_seeds=1, recurrent=True)
    with torch.no_grad():
        model.body.unit.weight[..., 10:] = torch.tensor([[1.0, 1.0], [1.0, 1.0]])  # grows like 2^t
        model.body.unit.weight[..., :10] = 1.0
    cfg_long = RecurrentArithmeticConfig(evaluation_size=20, test_length=300, short_test_length=0)
    metrics = RecurrentArithmeticTask(cfg_long, [0]).evaluate(model, 1)
    assert math.isinf(float(metrics["extrapolation_mse"])) and math.isfinite(float(metrics["interpolation_mse"]))
    assert task.finite_metrics == ("interpolation_mse",)


# -- the threshold ----------------------------------------------------------------------------------------------------
def test_recurrent_threshold_one_step_matches_the_analytic_value():
    # One step, U[-1, 1]: err(a + b) = Σ_i (δa_i + δb_i) x_i with δ = -ε on a subset, ±ε (random sign) elsewhere.
    cfg = RecurrentArithmeticConfig(operation="add", subsets="0:4,2:6", test_length=1, short_test_length=0)
    eps = 1e-3
    # inputs 0,1: -ε ± ε; 2,3: -2ε; 4,5: ±ε - ε; 6..9: ±ε ± ε.  E[x²] = 1/3.
    expected = (4 * (2 * eps**2) + 2 * (4 * eps**2) + 4 * (2 * eps**2)) / 3
    value = success_threshold(cfg, eps=eps, samples=40_000, recurrent=True)
    assert value == pytest.approx(expected, rel=0.03)


def test_recurrent_threshold_add_and_sub_alike_and_deterministic():
    add = success_threshold(RecurrentArithmeticConfig(operation="add", test_length=300), samples=2_000, recurrent=True)
    sub = success_threshold(RecurrentArithmeticConfig(operation="sub", test_length=300), samples=2_000, recurrent=True)
    assert 0.2 < add / sub < 5  # no sign pattern that keeps one of them exactly
    success_threshold.cache_clear()
    again = success_threshold(RecurrentArithmeticConfig(operation="add", test_length=300), samples=2_000,
                              recurrent=True)
    assert again == add
    longer = success_threshold(RecurrentArithmeticConfig(operation="add", test_length=600), samples=2_000,
                               recurrent=True)
    assert longer > 4 * add  # compounding recurrent errors grow faster than the length


# -- the models -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["nau-nau", "nac-nac", "nalu-nalu", "nau-nmu", "lstm", "gru", "rnn-tanh",
                                  "rnn-relu"])
def test_sequence_models_every_step_chosen_steps_and_shared_input(name):
    torch.manual_seed(0)
    model = build_model(name, 10, 1, hidden_size=3, num_seeds=2, recurrent=True)
    x = torch.rand(1, 4, 150, 10) * 2 - 1
    full = model(x.expand(2, -1, -1, -1))
    assert full.shape == (2, 4, 150, 1)
    torch.testing.assert_close(model(x, steps=[0, 99, 149]), full[:, :, [0, 99, 149]])
    full.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    with pytest.raises(ShapeError, match="steps"):
        model(x, steps=[150])
    with pytest.raises(ShapeError, match="increasing"):
        model(x, steps=[5, 2])


def test_seed_rnn_states_end_in_forward():
    rnn = SeedRNN("lstm", 4, 5, num_seeds=2)
    x = torch.rand(2, 3, 300, 4)
    torch.testing.assert_close(rnn.states(x)[..., -1, :], rnn(x))


# -- the experiment ---------------------------------------------------------------------------------------------------
def test_grids_cost_and_names():
    exp = get_experiment("arithmetic-recurrent")
    quick = exp.grid("quick")
    assert {s.task["operation"] for s in quick} == {"add", "sub"}
    assert {s.model for s in quick} == {"nau-nau", "nac-nac", "nalu-nalu", "lstm", "gru", "rnn-tanh", "rnn-relu"}
    assert all(s.task["hidden_size"] == (16 if s.model in ("lstm", "gru", "rnn-tanh", "rnn-relu") else 2)
               for s in quick)
    acceptance = {(s.model, s.task["operation"]): s for s in exp.grid("acceptance")}
    assert all(acceptance["nau-nau", op].train.seeds == 20 for op in ("add", "sub"))
    assert {op for m, op in acceptance if m == "nalu-nalu"} == {"add", "sub", "mul", "div", "squared", "root"}
    for profile in ("quick", "acceptance", "paper"):
        assert all(exp.cost(s) > 0 for s in exp.grid(profile))
    names = {s.name for s in exp.grid("paper")}
    assert len(names) == len(exp.grid("paper"))  # unique: the positive-range runs carry their range
    assert "arithmetic-recurrent/nalu-nalu/root/U[1,2]" in names
    assert exp.protocol >= 2


def _ctx(tmp_path, runs):
    return ReportContext(store=None, runs=runs, folder=tmp_path)


def _run(model, op, rate, norm, seeds=10):
    spec = RunSpec("arithmetic-recurrent", model, {"operation": op}, TrainConfig(iterations=100, seeds=seeds))
    return {"key": f"{model}{op}", "name": spec.name, "config": spec.resolved(),
            "summary": {"seeds": seeds, "successes": round(rate * seeds), "success_rate": rate,
                        "success_ci": [0.0, 1.0], "normalized_extrapolation_error": norm}}


def test_claims_answer_from_the_strongest_runs(tmp_path):
    claims = {word: next(c for c in get_experiment("arithmetic-recurrent").claims if c.text.startswith(start))
              for word, start in (("NAC", "The NAC"), ("NAU", "The NAU"), ("LSTMs", "LSTMs"))}
    assert claims["NAC"].check(_ctx(tmp_path, [])).answer == NOT_RUN
    runs = [_run("nac-nac", "add", 0.5, 0.01), _run("nac-nac", "sub", 0.2, 0.3), _run("nau-nau", "add", 1.0, 1e-4),
            _run("nau-nau", "sub", 0.8, 1e-3), _run("lstm", "add", 0.0, 95.0), _run("rnn-relu", "sub", 0.0, 4.0)]
    ctx = _ctx(tmp_path, runs)
    nac = claims["NAC"].check(ctx)
    assert nac.answer == REPRODUCED and "nac-nac a − b" in nac.evidence
    nau = claims["NAU"].check(ctx)
    assert nau.answer == NOT_REPRODUCED and "8 of 10" in nau.evidence
    baselines = claims["LSTMs"].check(ctx)
    assert baselines.answer == NOT_REPRODUCED and "rnn-relu" in baselines.evidence  # 4.0 is not > 10


def test_summary_sample_and_a_short_training(tmp_path):
    exp = get_experiment("arithmetic-recurrent")
    spec = RunSpec(exp.name, "nau-nau", {"evaluation_size": 50, "test_length": 200, "short_test_length": 20},
                   TrainConfig(iterations=400, seeds=2, eval_every=200, learning_rate=1e-2,
                               regularizers={"nau": {"scale": 0.01, "start": 200, "end": 300}}))
    result = exp.train(spec)
    summary = exp.summarize(spec, result)
    by_length = summary["normalized_error_by_length"]
    assert list(by_length) == ["1", "2", "5", "10", "20", "50", "100", "200"]
    # it learns the running sum: far better than the untrained cell at 20 times the training length
    assert summary["normalized_extrapolation_error"] < 5 and summary["normalized_short_extrapolation_error"] < 5
    assert summary["threshold"] > 0 and summary["seeds"] == 2
    config = spec.task_config()
    (row,) = exp.sample(config, "train", 1, 0)
    x = np.array(row["x"])
    assert x.shape == (10, 10) and row["steps"] == list(range(1, 11)) and row["length"] == 10
    lo, hi = (int(v) for v in row["subsets"].split(",")[0].split(":"))
    assert row["a"][-1] == pytest.approx(x[:, lo:hi].sum(), abs=1e-3)
    assert row["target"] == pytest.approx([a + b for a, b in zip(row["a"], row["b"])])
    (test_row,) = exp.sample(config, "extrapolation", 1, 0)
    assert test_row["steps"] == [20, 200] and len(test_row["x"]) == 200
