"""The number-words experiment (Trask et al. 2018, §4.3, Table 3 and Figure 3): options, task, training through the
engine, summary, Figure 3's artifact, the claims' verdicts, the report and the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nalm.cli import main
from nalm.engine import NOT_REPRODUCED, NOT_RUN, REPRODUCED, ReportContext, RunSpec, get_experiment, run
from nalm.engine.store import Store, config_key
from nalm.engine.task import torch_generators
from nalm.engine.train import TrainConfig
from nalm.errors import ConfigError
from nalm.experiments.number_words import experiment as exp_nw
from nalm.experiments.number_words import task as nw

TINY = {"embedding_size": 8, "hidden_size": 4}
TRAIN = TrainConfig(iterations=6, seeds=2, eval_every=3, batch_size=169, learning_rate=1e-2)


def test_options_are_validated():
    exp = get_experiment("number-words")
    test = nw.split(0)["test"].tolist()
    cfg = exp_nw.NumberWordsOptions(figure_numbers=[test[3], test[9]])  # a stored config gives a list
    assert cfg.figure_numbers == (test[3], test[9]) and exp_nw.figure_numbers(cfg) == [test[3], test[9]]
    train_number = int(nw.split(0)["train"][30])
    for bad, match in [({"split_seed": -1}, "split_seed"), ({"hidden_size": 0}, "hidden_size"),
                       ({"embedding_size": 2.5}, "embedding_size"), ({"figure_numbers": (train_number,)}, "test"),
                       ({"figure_numbers": (test[0], test[0])}, "distinct"), ({"figure_numbers": 5}, "list")]:
        with pytest.raises(ConfigError, match=match):
            exp_nw.NumberWordsOptions(**bad)
    with pytest.raises(ConfigError, match="output unit"):
        exp.check_model("lstm")
    exp.check_model("nau")  # any registered unit may be the output layer


def test_default_figure_numbers_are_unseen_and_varied():
    numbers = exp_nw.figure_numbers(exp_nw.NumberWordsOptions())
    test = set(nw.split(0)["test"].tolist())
    assert len(numbers) == len(exp_nw.FIGURE3_TARGETS) and set(numbers) <= test
    assert [len(nw.words(n)) for n in numbers] == [len(nw.words(t)) for t in exp_nw.FIGURE3_TARGETS]
    assert nw.words(numbers[0])[0].endswith("ty") and len(nw.words(numbers[0])) == 1  # a lone tens word, as "eighty"


def test_prefix_values_read_the_words_so_far():
    assert exp_nw.prefix_values(702) == [7, 700, 700, 702]
    assert exp_nw.prefix_values(358) == [3, 300, 300, 350, 358]
    assert exp_nw.prefix_values(40) == [40] and exp_nw.prefix_values(0) == [0]
    assert all(exp_nw.prefix_values(n)[-1] == n for n in nw.NUMBERS)


def test_constant_errors_are_those_of_the_training_median():
    errors = nw.constant_errors(0)
    s = nw.split(0)
    c = np.median(s["train"])
    assert errors["test"] == pytest.approx(np.abs(s["test"] - c).mean()) and 200 < errors["test"] < 300


def test_task_batches_and_evaluation():
    cfg = exp_nw.NumberWordsOptions(**TINY)
    task = exp_nw.NumberWordsTask(cfg, [0, 1])
    x, y, _ = task.batch(1, None, 169)
    assert x.shape == (2, 169, 5) and y.shape == (2, 169, 1)
    assert sorted(y[0, :, 0].tolist()) == sorted(y[1, :, 0].tolist()) == nw.split(0)["train"].tolist()
    assert not torch.equal(y[0], y[1])  # each seed its own order
    xs, _, _ = task.batch(1, None, 16)
    assert xs.shape == (2, 16, 5)
    model = exp_nw.NumberWords().model(cfg, "nalu", 2)
    model.reset_parameters(torch_generators([0, 1], "init"))
    metrics = task.evaluate(model, 2)
    assert {"train_mae", "validation_mae", "test_mae"} <= set(metrics)
    n = task.numbers[2]
    k = len(nw.words(n))
    last = metrics[f"estimate_{n}_{k}"]
    with torch.no_grad():
        alone = model(nw.tensors([n])[0])[:, 0, 0].double()
    torch.testing.assert_close(last, alone)  # the last running estimate is the prediction, whatever the batch
    assert f"estimate_{n}_{k + 1}" not in metrics


def _train(tmp_path, model="nalu", train=TRAIN):
    spec = RunSpec("number-words", model, dict(TINY), train)
    store = Store(tmp_path / "s.sqlite")
    summary = run(spec, store)
    return spec, store, summary


def test_a_run_stores_table3_statistics_and_figure3(tmp_path):
    spec, store, summary = _train(tmp_path)
    with store:
        key = config_key(spec.resolved())
        seeds = store.seeds(key)
        for split in nw.SPLITS:
            values = [s[f"{split}_mae"] for s in seeds]
            assert summary[f"{split}_mae_median"] == pytest.approx(float(np.median(values)))
            assert summary[f"{split}_mae_min"] <= summary[f"{split}_mae_q25"] <= summary[f"{split}_mae_median"]
            assert summary[f"constant_{split}_mae"] == pytest.approx(nw.constant_errors(0)[split])
        assert summary["seeds"] == 2 and summary["diverged"] == 0 and summary["best_step_median"] in (0, 3, 6)
        art = store.artifact(key, "figure3")
        assert art["seeds"] == [0, 1] and [i["number"] for i in art["numbers"]] == exp_nw.figure_numbers(
            spec.task_config())
        for item in art["numbers"]:  # each seed's estimates at its best step, as recorded
            n, k = item["number"], len(item["words"])
            assert np.array(item["estimates"]).shape == (2, k) and item["ideal"][-1] == n
            assert [row[-1] for row in item["estimates"]] == [s[f"estimate_{n}_{k}"] for s in seeds]


def test_run_names_tell_configurations_apart():
    exp = get_experiment("number-words")
    assert exp.run_name(exp_nw.NumberWordsOptions(), "nalu") == "number-words/nalu"
    assert exp.run_name(exp_nw.NumberWordsOptions(split_seed=2, hidden_size=5), "nac") == \
        "number-words/nac/e256h5/split2"


class _FakeStore:
    """Per-seed rows hold the output NALU's gate: 0.1 unscaled, 0.9 scaled (keys end in the scale)."""

    def artifact(self, key, name):
        return None

    def seeds(self, key):
        return [{"seed": 0, "diag.output.gate_mean": 0.9 if key.endswith("/100") else 0.1}]


def _fake_run(model, train, validation, test, seeds=10, hidden=10, scale=1.0):
    summary = {"seeds": seeds, "diverged": 0, "best_step_median": 1000,
               **{f"constant_{k}_mae": v for k, v in nw.constant_errors(0).items()}}
    for split, v in (("train", train), ("validation", validation), ("test", test)):
        summary.update({f"{split}_mae_{s}": v for s in ("median", "q25", "q75", "min", "max")})
    config = {"model": model, "task": {"split_seed": 0, "embedding_size": 256, "hidden_size": hidden,
                                       "figure_numbers": []} | ({"output_scale": scale} if scale != 1 else {}),
              "train": {"seeds": seeds, "iterations": 1000, "learning_rate": 1e-3, "batch_size": 169,
                        "eval_every": 250}}
    return {"key": f"{model}{hidden}/{scale}", "name": model, "config": config, "summary": summary}


def _verdicts(runs, tmp_path):
    ctx = ReportContext(_FakeStore(), runs, tmp_path)
    return [c.verdict(ctx) for c in get_experiment("number-words").claims]


def test_claims_answer_from_the_medians(tmp_path):
    assert [v.answer for v in _verdicts([], tmp_path)] == [NOT_RUN] * 4
    paper = [_fake_run("linear", 0.1, 30, 29), _fake_run("nac", 200, 230, 240), _fake_run("nalu", 0.2, 0.4, 0.4)]
    verdicts = _verdicts(paper, tmp_path)
    assert [v.answer for v in verdicts] == [REPRODUCED] * 3 + [NOT_RUN]
    assert "29" in verdicts[0].evidence and "0.4" in verdicts[2].evidence
    ours = [_fake_run("linear", 15, 79, 79), _fake_run("nac", 40, 60, 60), _fake_run("nalu", 12, 170, 163)]
    verdicts = _verdicts(ours, tmp_path)
    assert [v.answer for v in verdicts] == [REPRODUCED, NOT_REPRODUCED, NOT_REPRODUCED, NOT_RUN]
    assert "163" in verdicts[2].evidence and "79" in verdicts[2].evidence
    assert verdicts[2].why == ""  # no controlled run yet: no cause claimed
    # Only runs at the paper's sizes count; a NALU without rivals cannot generalise "best".
    assert _verdicts([_fake_run("linear", 1, 50, 50, hidden=4)], tmp_path)[0].answer == NOT_RUN
    assert _verdicts([_fake_run("nalu", 1, 1, 1)], tmp_path)[2].answer == NOT_RUN


def test_the_scaled_variant_and_the_why_it_gives(tmp_path):
    ours = [_fake_run("linear", 15, 79, 79), _fake_run("nac", 40, 60, 60), _fake_run("nalu", 12, 170, 163)]
    holds = [_fake_run("linear", 15, 80, 80, scale=100), _fake_run("nac", 40, 60, 60, scale=100),
             _fake_run("nalu", 2, 9, 9.5, scale=100)]
    verdicts = _verdicts(ours + holds, tmp_path)
    assert [v.answer for v in verdicts] == [REPRODUCED, NOT_REPRODUCED, NOT_REPRODUCED, REPRODUCED]
    assert verdicts[0].evidence.endswith("test MAE 79 (overfitting means test ≥ 2 × train)")  # the literal runs
    assert verdicts[2].why.startswith("The output's scale: unscaled, the NALU's additive path")
    assert "LSTM + NALU 9.5" in verdicts[2].why and "ends at 0.10 unscaled and 0.90 scaled" in verdicts[2].why
    assert verdicts[3].why == ""  # a reproduced claim carries no why
    fails = holds[:2] + [_fake_run("nalu", 2, 90, 95, scale=100)]
    why = _verdicts(ours + fails, tmp_path)[2].why
    assert why.startswith("Not the output's scale alone") and "LSTM + NALU 95" in why


def test_report_has_table3_the_constant_row_and_figure3(tmp_path):
    spec, store, _ = _train(tmp_path, train=TrainConfig(iterations=2, seeds=2, eval_every=1, batch_size=169))
    with store:
        exp = get_experiment("number-words")
        lines = exp.report(ReportContext(store, store.runs("number-words"), tmp_path))
    text = "\n".join(lines)
    assert lines[0].startswith("## Table 3") and "`hundred`" in text and "`zero`" in text
    assert "| LSTM + NALU |" in text and "| constant (training median) |" in text
    assert "generalises best" in text
    assert (tmp_path / "figure3_number_words.png").stat().st_size > 1000 and "figure3_number_words.png" in text


def test_cli_run_prints_mae_per_split_and_sample_prints_tokens(tmp_path, capsys):
    store = str(tmp_path / "s.sqlite")
    assert main(["run", "number-words", "--model", "linear", "--seeds", "2", "--iterations", "2", "--eval-every",
                 "1", "--embedding-size", "8", "--hidden-size", "4", "--json", "--store", store]) == 0
    result = json.loads(capsys.readouterr().out)
    assert all(isinstance(result[f"{s}_mae_median"], float) for s in nw.SPLITS)
    assert main(["sample", "number-words", "--split", "test", "--count", "3", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    test = set(nw.split(0)["test"].tolist())
    for r in rows:
        assert r["number"] in test and r["words"] == " ".join(nw.words(r["number"]))
        assert r["tokens"] == nw.encode(r["number"]) and r["input"][-len(r["tokens"]):] == r["tokens"]


def test_profiles_cover_the_three_rows_and_cost_grows_with_the_work():
    exp = get_experiment("number-words")
    quick, acceptance, paper = (exp.grid(p) for p in ("quick", "acceptance", "paper"))
    for grid, seeds in ((quick, 3), (acceptance, 10), (paper, 100)):
        assert {s.model for s in grid} == {"linear", "nac", "nalu"} and min(s.train.seeds for s in grid) >= seeds
    # acceptance: 3 models × 3 protocols, as the paper has it and with the output scaled (the controlled run)
    assert len({s.name for s in quick}) == 3 and len({json.dumps(s.resolved()) for s in acceptance}) == 18
    assert {s.task_config().output_scale for s in acceptance} == {1.0, exp_nw.SCALE}
    assert sum(exp.cost(s) for s in quick) < 6 * 60  # the quick budget: about 6 core-minutes
    assert 600 < sum(exp.cost(s) for s in acceptance) < 7200  # under an hour on 2 workers
    small, big = (RunSpec("number-words", "nalu", {}, TrainConfig(iterations=1000, seeds=s)) for s in (1, 50))
    assert 0 < exp.cost(small) < exp.cost(big)


def test_spread_counts_a_blown_up_seed_as_infinite_and_skips_missing_ones():
    s = exp_nw._spread([1.0, 2.0, 3.0, float("inf"), None, float("nan")])
    assert s["median"] == 2.5 and s["min"] == 1.0 and s["max"] == float("inf") and s["q75"] == float("inf")
    assert exp_nw._spread([None])["median"] is None


def test_the_scaled_variants_why_is_the_nac_row_the_nalus_additive_path_alone(tmp_path):
    ours = [_fake_run("linear", 15, 79, 79), _fake_run("nac", 40, 60, 60), _fake_run("nalu", 12, 170, 163)]
    scaled = [_fake_run("linear", 15, 58, 58, scale=100), _fake_run("nac", 40, 62, 62, scale=100),
              _fake_run("nalu", 12, 130, 140, scale=100)]
    variant = _verdicts(ours + scaled, tmp_path)[3]
    assert variant.answer == NOT_REPRODUCED and variant.why.startswith("The gate: the NAC is this NALU's additive")
    assert "(LSTM + NAC) 62, the learned gate (LSTM + NALU) 140, whose gate ends at 0.90" in variant.why
    assert "the linear output 58" in variant.why and "nalu/scale100, 10 seeds × 1,000 steps" in variant.why
    close = scaled[:2] + [_fake_run("nalu", 12, 70, 70, scale=100)]
    assert _verdicts(ours + close, tmp_path)[3].why.startswith("The NAC row does not single out the gate")
    assert _verdicts(ours + scaled[1:], tmp_path)[3].why.startswith("The gate:")  # no linear row: still the gate
    assert _verdicts(ours + [scaled[0], scaled[2]], tmp_path)[3].why == ""  # no NAC row: no cause claimed


def test_the_controlled_runs_section_has_the_whys_and_the_gate_figure(tmp_path):
    runs = [_fake_run("linear", 15, 79, 79), _fake_run("nac", 40, 60, 60), _fake_run("nalu", 12, 170, 163),
            _fake_run("linear", 15, 58, 58, scale=100), _fake_run("nac", 40, 62, 62, scale=100),
            _fake_run("nalu", 12, 130, 140, scale=100)]

    class Seeds(_FakeStore):
        def seeds(self, key):
            return [{"seed": k, "diag.output.gate_mean": 0.4 + 0.05 * k, "test_mae": 140.0 + k} for k in range(3)]

    ctx = ReportContext(Seeds(), runs, tmp_path)
    literal = get_experiment("number-words").claims[2].verdict(ctx)
    assert literal.why.startswith("Not the output's scale alone") and " The gate: the NAC is" in literal.why
    text = "\n".join(get_experiment("number-words").report(ctx))
    assert "### Controlled runs: why LSTM + NALU does not generalise best" in text and "- Not the output's" in text
    assert (tmp_path / "number_words_gate.png").stat().st_size > 10_000
