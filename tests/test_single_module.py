"""single-module: (range, seed) slots on one seed axis, each range with its own data, threshold and statistics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nalm.cli import main
from nalm.engine import ReportContext, RunSpec, TrainConfig, get_experiment
from nalm.engine.executors import block_spec, merge_blocks
from nalm.engine.ranges import Range
from nalm.engine.reproduce import specs
from nalm.engine.store import Store
from nalm.engine.task import seed_generators
from nalm.errors import ConfigError
from nalm.experiments.single_module.experiment import UNITS, train_config
from nalm.experiments.single_module.task import (RANGES, SingleModuleConfig, SingleModuleTask, perturbed,
                                                 stream_id, success_threshold)
from nalm.engine.train import Regularizer
from nalm.units import get_unit, list_units

EXP = get_experiment("single-module")
TINY = dict(iterations=60, eval_every=20, batch_size=16, learning_rate=1e-2)


def _run(model: str, ranges: str, seeds: int, first_seed: int = 0, **task):
    train = train_config(model, seeds=seeds, first_seed=first_seed, **TINY)
    spec = RunSpec("single-module", model, {"operation": "add", "ranges": ranges, "evaluation_size": 64, **task},
                   train)
    return spec, EXP.train(spec)


def _curve(result, range_index: int, seed: int) -> list[dict]:
    sid = stream_id(range_index, seed)
    return [{k: v for k, v in row.items() if k != "seed"} for row in result.curves if row["seed"] == sid]


@pytest.mark.parametrize("model", ["nau", "nalu"])
def test_a_slot_trains_the_same_whatever_trains_beside_it(model):
    """(range 0, seed 0) of 2 ranges × 2 seeds against: other ranges and more seeds beside it, and alone."""
    _, base = _run(model, "0,6", 2)
    _, other = _run(model, "0,4,8", 3)
    _, alone = _run(model, "0", 1)
    reference = _curve(base, 0, 0)
    assert len(reference) == 4 and reference[-1]["step"] == 60
    assert _curve(other, 0, 0) == reference
    assert _curve(alone, 0, 0) == reference
    assert _curve(base, 6, 0) != reference  # the ranges do differ


def test_slots_draw_their_own_range_and_stream():
    config = SingleModuleConfig(ranges="0,4,6")
    slots = [(0, 0), (4, 0), (6, 0), (6, 1)]
    task = SingleModuleTask(config, slots)
    x, y, _ = task.sample([g.bit_generator for g in seed_generators([stream_id(*s) for s in slots], "data")], 500)
    assert x.shape == (4, 500, 2) and torch.equal(y, x[..., :1] + x[..., 1:2])
    for i, (r, _) in enumerate(slots):
        lo, hi = Range.parse(RANGES[r][0]).intervals[0]
        assert lo <= x[i].min() and x[i].max() < hi
    assert not torch.equal(x[2], x[3])  # two seeds of one range: two streams
    sets = task.evaluation_sets()
    assert torch.equal(sets["extrapolation"][0][2], sets["extrapolation"][0][3])  # one range: one test set
    test = sets["extrapolation"][0][1]  # range 4's test range is U[−6, −2) ∪ U[2, 6)
    assert (test.abs() >= 2).all() and (test.abs() < 6).all() and (test < 0).any() and (test > 0).any()
    assert task.thresholds[0] != task.thresholds[2]


def test_threshold_is_the_perturbed_module_mse():
    # Range 6 tests on U[2, 6): E[x] = 4, Var x = 4/3. + and −: y' − y = −ε(x₀ ± x₁), so the threshold is
    # ε²·E[(x₀ ± x₁)²] = ε²·(2·(16 + 4/3) ± 2·16).
    eps = 1e-5
    assert success_threshold("add", 6, 2, eps, 200_000) == pytest.approx(eps ** 2 * (2 * (16 + 4 / 3) + 32), rel=0.01)
    assert success_threshold("sub", 6, 2, eps, 200_000) == pytest.approx(eps ** 2 * 8 / 3, rel=0.01)
    # × and ÷: y' = y·(|x₀|^{−ε}|x₁|^{∓ε}) = y·(1 − ε log|x₀| ∓ ε log|x₁| + O(ε²)): second order in ε.
    for op in ("mul", "div"):
        assert success_threshold(op, 6, 2, 2 * eps, 10_000) == pytest.approx(4 * success_threshold(
            op, 6, 2, eps, 10_000), rel=1e-3)
    x = np.array([[-3.0, 2.0, 5.0]])
    assert perturbed("mul", x, 0.1)[0] == pytest.approx(-(3 ** 0.9) * 2 ** 0.9 * 5 ** 0.1)
    assert perturbed("div", x, 0.1)[0] == pytest.approx(-(3 ** 0.9) / 2 ** 0.9 * 5 ** 0.1)
    assert perturbed("sub", x, 0.1)[0] == pytest.approx(0.9 * -5 + 0.5)
    assert success_threshold("add", 6, 10, eps, 10_000) > success_threshold("add", 6, 2, eps, 10_000)


def test_json_prints_one_object_with_every_range(tmp_path, capsys):
    store = str(tmp_path / "s.sqlite")
    code = main(["run", "single-module", "--op", "mul", "--model", "nmu", "--seeds", "3", "--iterations", "40",
                 "--eval-every", "20", "--evaluation-size", "32", "--json", "--no-progress", "--store", store])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and len(out) == 1
    summary = json.loads(out[0])
    assert summary["seeds"] == 27 and [r["range"] for r in summary["ranges"]] == list(range(9))
    for r in summary["ranges"]:
        assert {"success_rate", "success_ci", "solved_at_median", "sparsity_error_mean", "threshold"} <= set(r)
        assert r["seeds"] == 3 and r["success_ci"][0] <= r["success_rate"] <= r["success_ci"][1]
    with Store(store) as s:
        run = s.runs("single-module")[0]
        rows = s.seeds(run["key"])
        assert sorted((row["range"], row["model_seed"]) for row in rows) == [(r, k) for r in range(9) for k in range(3)]
        lines = EXP.report(ReportContext(s, s.runs("single-module"), tmp_path))
    assert any(line.startswith("| nmu (3 × 40)") for line in lines)
    # beside the published rates of the same unit and ranges: ours / theirs, per range
    i = lines.index("| unit | range 0 | range 1 | range 2 | range 3 | range 4 | range 5 | range 6 | range 7 | range 8 |")
    ours = [round(100 * r["success_rate"]) for r in summary["ranges"]]
    assert lines[i + 2] == "| nmu | " + " | ".join(f"{o} / {p}" for o, p in zip(ours, (100, 80, 68) + (100,) * 6)) + " |"
    assert (tmp_path / "single_module_mul.png").exists()
    verdicts = [c.check(ReportContext(None, [run], tmp_path)).answer for c in EXP.claims]
    assert verdicts[0] == verdicts[2] == "not run" and verdicts[1] in ("reproduced", "not reproduced")


def test_unit_table_and_grids():
    assert set(UNITS) == {"add", "sub", "mul", "div"}
    assert "nmu" not in UNITS["div"] and "nau" not in UNITS["mul"]
    assert all(u in UNITS[op] for u in ("nalu", "gnalu", "inalu") for op in UNITS)
    assert set(EXP.models) <= set(list_units())  # every unit of the table is registered
    quick = specs("quick", ["single-module"])
    acceptance = EXP.grid("acceptance")
    assert len(acceptance) == sum(map(len, UNITS.values())) + 2
    assert {(s.model, s.task["operation"]) for s in acceptance if s.task.get("input_size") != 10} == {
        (u, op) for op, us in UNITS.items() for u in us}
    assert [s.model for s in acceptance if s.task.get("input_size") == 10] == ["nmru", "realnpu"]
    inalu = next(s for s in acceptance if s.model == "inalu")
    assert inalu.train.grad_clip_value == 0.1 and inalu.train.regularizers["inalu"]["scale"] == 1.0
    assert all(s.train.seeds == 25 and s.train.iterations == 50_000 for s in acceptance)
    npu = next(s for s in acceptance if s.model == "npu")
    assert npu.train.learning_rate == 5e-3 and npu.train.regularizers["nmu"] == {"scale": 10.0, "start": 20_000,
                                                                                   "end": 35_000}
    assert sum(EXP.cost(s) for s in quick) < sum(EXP.cost(s) for s in acceptance)
    # their own regularisers: the MC-FC's ramp, the NPUs' L1 in steps of × 10 (÷ two decades lower)
    by = {(s.model, s.task["operation"], s.task.get("input_size", 2)): s.train.regularizers for s in acceptance}
    assert by[("mcfc", "add", 2)]["mcfc"] == {"scale": 10.0, "start": 20_000, "end": 35_000}
    assert by[("npu", "mul", 2)]["npu"] == {"scale": 1e-5, "start": 0, "end": 20_000, "initial": 1e-7}
    assert by[("realnpu", "div", 10)]["realnpu"] == {"scale": 1e-7, "start": 0, "end": 20_000, "initial": 1e-9}
    assert "mcfc" not in by[("nau", "add", 2)] and "npu" not in by[("nmu", "mul", 2)]


def test_the_npus_l1_schedule_and_penalty():
    beta = Regularizer(1e-5, 0, 20_000, initial=1e-7)
    assert [beta(t) for t in (0, 9_999, 10_000, 19_999, 20_000, 50_000)] == pytest.approx(
        [1e-7, 1e-7, 1e-6, 1e-6, 1e-5, 1e-5])
    assert Regularizer.parse("npu=1e-5:0:20000:1e-7") == ("npu", beta)
    assert Regularizer(0.01, 1, 2).stored() == {"scale": 0.01, "start": 1, "end": 2}  # older keys unchanged
    with pytest.raises(ConfigError, match="initial"):
        Regularizer(1e-7, 0, 10, initial=1e-5)
    with pytest.raises(ConfigError, match="unit=scale:start:end"):
        Regularizer.parse("npu=1:0:10:1:2")
    npu = get_unit("npu", 2, 1, num_seeds=2)
    with torch.no_grad():
        npu.W_real.copy_(torch.tensor([[[1.0, -2.0]], [[0.5, 0.0]]]))
        npu.W_imag.copy_(torch.tensor([[[0.0, 3.0]], [[0.0, 0.0]]]))
    # |W_r| + |W_i| + |g| with the gate at its initial 0.5
    assert npu.regularization_loss().tolist() == pytest.approx([1 + 2 + 3 + 1.0, 0.5 + 1.0])


@pytest.mark.parametrize("options, needle", [({"ranges": "9"}, "range indices"), ({"ranges": "x"}, "cannot parse"),
                                             ({"input_size": 1}, "input_size"), ({"operation": "pow"}, "unknown")])
def test_bad_options_are_named(options, needle):
    with pytest.raises(ConfigError, match=needle):
        SingleModuleConfig(**options)
    with pytest.raises(ConfigError, match="unknown unit"):
        RunSpec("single-module", "nmu-nmu", {})


def test_bench_smoke(capsys):
    code = main(["bench", "single-module", "--units", "nau", "--seeds", "2", "--steps", "20", "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert code == 0 and [(r["mode"], r["seeds"]) for r in rows] == [("all-ranges", 18), ("per-range", 18),
                                                                      ("reference", 1)]
    assert all(r["unit"] == "nau" and r["steps"] == 20 and r["seed_iterations_per_s"] > 0 for r in rows)
    assert main(["bench", "single-module", "--units", "nope", "--steps", "5"]) == 2
    assert "unknown unit 'nope'" in capsys.readouterr().err


def test_seed_blocks_merge_into_the_records_of_one_run():
    """The Ray executor's blocks of model seeds: 3 seeds as blocks of 2 + 1 on two ranges give the records of the
    3 seeds trained at once (in block order), and a block missing is an error."""
    spec, whole = _run("nau", "0,6", 3)
    parts = [{"first_seed": f, "seeds": n, "records": EXP.train(block_spec(spec, f, n)).records, "artifacts": {},
              "seconds": 0} for f, n in ((0, 2), (2, 1))]
    merged = merge_blocks(spec, parts)
    assert sorted(json.dumps(r) for r in merged.records) == sorted(json.dumps(r) for r in whole.records)
    with pytest.raises(ValueError, match="cover seeds"):
        merge_blocks(spec, parts[:1])
