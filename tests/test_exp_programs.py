"""The program-add and program-eval experiments (Trask et al. 2018, §4.4): configuration, samples, evaluation sets
and metrics, the claims' checks, the report section, grids and a short training run that extrapolates."""

from __future__ import annotations

import ast
import json

import pytest
import torch

import nalm.experiments.programs.experiment as E
from nalm.experiments.programs import config as C
from nalm.engine import NOT_REPRODUCED, NOT_RUN, REPRODUCED, ReportContext, RunSpec, get_experiment
from nalm.engine.task import seed_generators
from nalm.engine.train import TrainConfig, train
from nalm.errors import ConfigError
from nalm.experiments.programs import task as P
from nalm.experiments.programs.report import check_fits, check_only_nalu, check_stable

ADD, EVAL = get_experiment("program-add"), get_experiment("program-eval")


class SumOfValues(torch.nn.Module):
    """An oracle for program-add: the sum of the value channel is the program's scaled value."""

    def __init__(self, num_seeds: int):
        super().__init__()
        self.num_seeds = num_seeds

    def forward(self, x):
        return x[..., P.VALUE_CHANNEL].sum(-1, keepdim=True).expand(self.num_seeds, -1, -1)


@pytest.mark.parametrize("options, bad", [({"hidden_size": 0}, "hidden_size"), ({"train_low": 100}, "train_low"),
                                          ({"value_scale": -1.0}, "value_scale"), ({"loss": "l1"}, "loss"),
                                          ({"gate": "both"}, "gate"), ({"eps": 1.0}, "eps"),
                                          ({"operations": "pair,while"}, "while")])
def test_config_errors_name_the_bad_value(options, bad):
    with pytest.raises(ConfigError, match=bad):
        E.EvalConfig(**options)


@pytest.mark.parametrize("exp", [ADD, EVAL])
def test_samples_are_python_with_our_interpreters_value(exp):
    config = exp.Config()
    for split in exp.splits:
        items = exp.sample(config, split, 5, 3)
        json.dumps(items)
        for item in items:
            module = ast.parse(item["program"])  # parsed, never run
            last = module.body[-1]
            assert isinstance(last, ast.Expr) and last.value.func.id == "print"
            numbers = [s for s in item["steps"] if isinstance(s, int)]
            low, high = {"train": (0, 100), "valid": (0, 100), "test3": (100, 1000), "test4": (1000, 10_000)}[split]
            literals = [n for n in numbers if item["steps"][item["steps"].index(n) - 1] != "range"]
            assert all(low <= n < high for n in literals), (split, item)
            if exp is ADD:
                assert item["target"] == numbers[0] + numbers[1] and len(item["steps"]) == 8


def test_train_samples_are_the_first_training_batch():
    config = E.AddConfig()
    task = E.ProgramTask(config, "add")
    x, y, _ = task.sample([g.bit_generator for g in seed_generators([7], "data")], 4)
    items = ADD.sample(config, "train", 4, 7)
    assert [round(float(v) / config.value_scale) for v in y[0, :, 0]] == [i["target"] for i in items]


def test_evaluation_with_an_oracle_is_perfect_and_metrics_are_per_split():
    task = E.ProgramTask(E.AddConfig(evaluation_size=200), "add")
    metrics = task.evaluate(SumOfValues(2), 2)
    assert set(metrics) == {f"{s}_{m}" for s in E.SPLITS for m in E.METRICS}
    for s in E.SPLITS:
        assert metrics[f"{s}_digits"].tolist() == [1.0, 1.0] and metrics[f"{s}_exact"].tolist() == [1.0, 1.0]
        assert metrics[f"{s}_mae"].max() < 0.05
    x, values = task.evaluation_sets()["test4"]
    assert values.min() >= 2000 and values.max() < 20_000  # two 4-digit literals


def test_rmse_loss_is_the_root_of_the_mse_per_seed():
    out, y = torch.randn(3, 16, 1), torch.randn(3, 16, 1)
    mse = (out - y).pow(2).mean(dim=(1, 2))
    assert torch.allclose(E.ProgramTask(E.AddConfig(), "add").loss(out, y), mse.sqrt())
    assert torch.allclose(E.ProgramTask(E.AddConfig(loss="mse"), "add").loss(out, y), mse)


def test_model_options_reach_only_their_models():
    config = E.AddConfig(read_heads=2, eps=0.1, hidden_size=8)
    dnc, nalu = ADD.model(config, "dnc", 2), ADD.model(config, "lstm-nalu", 2)
    assert dnc.read_heads == 2 and nalu.eps == 0.1 and nalu.gate == "hidden"
    assert ADD.run_name(config, "lstm") == "program-add/lstm"  # eps and read_heads are not the LSTM's
    assert ADD.run_name(config, "lstm-nalu") == "program-add/lstm-nalu/eps=0.1"
    assert ADD.run_name(config, "dnc") == "program-add/dnc/read_heads=2"


def _run(model: str, valid: float, test4: float, test3: float | None = None, lr: float = 1e-2, iterations: int = 100,
         **task) -> dict:
    summary = {"seeds": 5, "diverged": 0, "valid_digits": valid, "test3_digits": test3 or test4,
               "test4_digits": test4, "valid_digits_iqr": [valid - 1, valid], "test3_digits_iqr": None,
               "test4_digits_iqr": [test4 - 2, test4 + 1], "test4_exact": 0.0, "test4_mae": 12.0}
    config = {"model": model, "task": {**{f: v for f, v in C.DEFAULTS.items() if f not in ("nesting", "operations",
                                                                                            "loop_max", "mul_max")},
                                       **task},
              "train": TrainConfig(iterations=iterations, seeds=5, learning_rate=lr).__dict__}
    return {"key": f"{model}{task}{lr}{iterations}", "name": model, "experiment": "program-add", "config": config,
            "summary": summary}


def test_claims_answer_from_the_numbers(tmp_path):
    ctx = ReportContext(None, [], tmp_path)
    assert {c.check(ctx).answer for c in ADD.claims} == {NOT_RUN}
    good = [_run("lstm", 95, 10), _run("ugrnn", 92, 8), _run("dnc", 91, 12), _run("lstm-nalu", 99, 97)]
    ctx = ReportContext(None, good, tmp_path)
    assert [c.check(ctx).answer for c in ADD.claims] == [REPRODUCED] * 3
    # a weaker configuration of the paper's model does not replace the default one
    ctx.runs.append(_run("lstm-nalu", 40, 5, gate="input", eps=1e-7))
    assert [c.check(ctx).answer for c in ADD.claims] == [REPRODUCED] * 3
    bad = [_run("lstm", 65, 60), _run("lstm-nalu", 99, 45, test3=70)]
    ctx = ReportContext(None, bad, tmp_path)
    verdicts = [c.check(ctx) for c in ADD.claims]
    assert [v.answer for v in verdicts] == [NOT_REPRODUCED] * 3
    assert "lstm 65.0 %" in verdicts[0].evidence and "99.0 / 70.0 / 45.0" in verdicts[2].evidence
    assert check_fits is ADD.claims[0].check and check_only_nalu is ADD.claims[1].check
    assert check_stable is ADD.claims[2].check


def test_the_whys_come_from_the_learning_rate_and_the_controller_runs(tmp_path):
    bad = [_run("lstm", 95, 10), _run("ugrnn", 80, 8), _run("dnc", 58, 7), _run("lstm-nalu", 60, 20)]
    fits, only, stable = (c.check(ReportContext(None, bad, tmp_path)) for c in ADD.claims)
    assert fits.answer == NOT_REPRODUCED and fits.why == only.why == stable.why == ""  # no controlled run yet
    fixed = bad + [_run("ugrnn", 95, 8, lr=1e-3), _run("dnc", 93, 7, lr=1e-3),
                   _run("lstm-nalu", 96, 94, controller_sees_value=True)]
    ctx = ReportContext(None, fixed, tmp_path)
    fits, only, stable = (c.check(ctx) for c in ADD.claims)
    # the controlled runs do not replace the rows: the claims still read the default ones
    assert fits.answer == only.answer == stable.answer == NOT_REPRODUCED and "ugrnn 80.0 %" in fits.evidence
    assert fits.why.startswith("The learning rate: with the one change of a lower rate (ours is 0.01; the paper")
    assert "ugrnn 80.0 % at 100 steps; 95.0 % at learning rate 0.001 and 100 steps; dnc 58.0 %" in fits.why
    assert "program-add, 5 seeds per run, learning rate 0.01 unless stated" in fits.why
    assert "The controller: a value-blind LSTM" in fits.why and "seeing the values 96.0 / 94.0" in fits.why
    assert "misses the training range's programs; fed" in fits.why and "misses the 4-digit literals' programs" in only.why
    assert only.why.startswith("The controller:") and "learning rate" not in only.why
    # seeing the values fits more of the training range and extrapolates worse: the controller either way
    trade = bad + [_run("lstm-nalu", 70, 12, controller_sees_value=True), _run("lstm-nau", 53, 48)]
    only = check_only_nalu(ReportContext(None, trade, tmp_path))
    assert only.why.startswith("The controller: the if-statements need the values to choose a branch")
    assert "value-blind 60.0 / 20.0, seeing the values 70.0 / 12.0" in only.why and "NAU, value-blind too, 53.0 / 48.0" \
        in only.why
    half = bad + [_run("ugrnn", 95, 8, lr=1e-3), _run("dnc", 60, 7, lr=1e-3)]
    assert "do not single out a cause" in check_fits(ReportContext(None, half, tmp_path)).why
    # more steps keep raising both rows: the budget, shown by the trend of each row's runs
    longer = half + [_run("ugrnn", 86, 8, iterations=500), _run("dnc", 70, 7, iterations=400)]
    why = check_fits(ReportContext(None, longer, tmp_path)).why
    assert why.startswith("The budget: a lower learning rate does not make them fit, but more steps")
    assert "ugrnn 80.0 % at 100 steps → 86.0 % at 500 steps; 95.0 % at learning rate 0.001" in why
    # a failing row without a controlled run is named, not explained
    some = bad + [_run("ugrnn", 86, 8, iterations=500)]
    why = check_fits(ReportContext(None, some, tmp_path)).why
    assert why.startswith("The budget: more steps") and "no controlled run of dnc, whose cause is not shown" in why


def test_report_section_has_the_table_and_the_figure(tmp_path):
    runs = [_run("lstm", 95, 10), _run("lstm-nalu", 99, 97), _run("lstm-nalu", 40, 5, gate="input", eps=1e-7),
            _run("lstm-nau", 100, 100)]
    lines = ADD.report(ReportContext(None, runs, tmp_path))
    text = "\n".join(lines)
    assert lines[0].startswith("## Supplementary Figure 6")
    assert "| lstm-nalu (eps=1e-07, gate=input) | 5 × 100 |" in text and "— (beyond the paper)" in text
    assert "97.0 [95.0, 98.0]" in text  # median [IQR] of the 4-digit digits
    assert (tmp_path / "figure_program_add.png").stat().st_size > 1000
    assert EVAL.report(ReportContext(None, [], tmp_path))[0].startswith("## Figure 4")


@pytest.mark.parametrize("exp", [ADD, EVAL])
def test_grids_build_and_quick_fits_the_budget(exp):
    for profile in ("quick", "acceptance", "paper"):
        specs = exp.grid(profile)
        assert specs and all(isinstance(s, RunSpec) and exp.cost(s) > 0 for s in specs)
        assert len({s.name + str(s.train) for s in specs}) == len(specs)
    assert sum(exp.cost(s) for s in exp.grid("quick")) < 480  # core-seconds: at most 8 core-minutes each


def test_a_configured_nau_learns_addition_and_extrapolates():
    """lstm-nau, 2 seeds, 80 steps: exact on 4-digit literals (the beyond-the-paper row works)."""
    config = E.AddConfig(evaluation_size=200, hidden_size=16)
    spec = RunSpec("program-add", "lstm-nau", {"evaluation_size": 200, "hidden_size": 16},
                   TrainConfig(iterations=80, seeds=2, batch_size=32, learning_rate=1e-2, eval_every=40,
                               grad_clip=1.0, regularizers={}))
    result = train(ADD.model(config, "lstm-nau", 2), ADD.task(config, [0, 1]), spec.train)
    summary = ADD.summarize(spec, result)
    assert summary["test4_digits"] > 95 and summary["valid_digits"] > 95, summary


def test_summary_counts_a_diverged_seed_as_a_failure():
    rows = [{"diverged": False, "best_step": 10, **{f"{s}_{m}": 1.0 if m in ("digits", "exact") else 0.5
                                                     for s in E.SPLITS for m in E.METRICS}} for _ in range(3)]
    rows.append({**rows[0], "diverged": True})
    s = E.summarize_records(rows)
    assert s["seeds"] == 4 and s["diverged"] == 1
    assert s["test4_digits"] == 100.0 and s["test4_digits_iqr"] == [75.0, 100.0]
    assert s["test4_mae"] == 0.5 and s["test4_mae_iqr"][1] == float("inf")
    json.dumps(s)
