"""Diagnostics (nalm.engine.diagnostics): values computed by hand, per seed and independent across seeds, and stored
with the results at every evaluation step."""

from __future__ import annotations

import math

import pytest
import torch

from nalm import RecurrentCell, get_unit
from nalm.engine import RunSpec, TrainConfig, run
from nalm.engine.diagnostics import collect
from nalm.engine.store import Store


def test_nalu_diagnostics_by_hand():
    nalu = get_unit("nalu", 2, 1, eps=1e-7)
    with torch.no_grad():
        nalu.G.copy_(torch.tensor([[1.0, 0.0]]))  # g = σ(x₁)
        nalu.W_hat.fill_(100.0)  # tanh → 1
        nalu.M_hat.copy_(torch.tensor([[100.0, -100.0]]))  # σ → 1, 0: W = [1, 0]
    x = torch.tensor([[0.0, 5.0], [math.log(3.0), 1.0]])
    d = nalu.diagnostics(x)
    gates = torch.tensor([0.5, 0.75])
    assert d["gate_mean"].item() == pytest.approx(gates.mean().item())
    assert d["gate_std"].item() == pytest.approx(gates.std(correction=0).item())
    assert d["add_weight_abs_mean"].item() == pytest.approx(0.5, abs=1e-6)
    assert d["mul_weight_abs_mean"].item() == pytest.approx(0.5, abs=1e-6)
    # log(|0| + 1e-7) · 1: the log path's heavy tail at an input of zero
    assert d["log_path_abs_max"].item() == pytest.approx(-math.log(1e-7), rel=1e-5)


def test_recurrent_cell_diagnostics_of_an_exact_accumulator():
    cell = RecurrentCell("nau", 2, 2)
    with torch.no_grad():
        cell.unit.weight.copy_(torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.3, 1.0]]))
    d = cell.diagnostics(torch.zeros(1, 2))
    assert d["recurrent_diagonal_mean"].item() == pytest.approx(1.0)
    assert d["recurrent_offdiagonal_abs_max"].item() == pytest.approx(0.3)


def test_collect_names_every_unit_per_seed_and_keeps_seeds_apart():
    torch.manual_seed(0)
    model = torch.nn.Sequential(get_unit("nau", 3, 2, num_seeds=3), get_unit("nalu", 2, 1, num_seeds=3))
    x = torch.rand(1, 50, 3) + 1
    d = collect(model, x, 3)
    assert set(d) == {"diag.0.weight_abs_mean", "diag.0.weight_abs_max", "diag.1.gate_mean", "diag.1.gate_std",
                      "diag.1.add_weight_abs_mean", "diag.1.mul_weight_abs_mean", "diag.1.log_path_abs_max"}
    assert all(v.shape == (3,) and v.dtype == torch.float64 for v in d.values())
    with torch.no_grad():  # change seed 2 only: seeds 0 and 1 keep every value
        model[0].weight[2].mul_(3)
        model[1].G[2].add_(1)
    after = collect(model, x, 3)
    for k in d:
        assert torch.equal(after[k][:2], d[k][:2]), k
    assert not torch.equal(after["diag.1.gate_mean"][2:], d["diag.1.gate_mean"][2:])
    assert collect(torch.nn.Linear(3, 1), x[0], 1) == {}  # nothing to diagnose: nothing computed


def test_diagnostics_are_stored_per_seed_and_step(tmp_path):
    spec = RunSpec("arithmetic-recurrent", "nalu", {"operation": "add"},
                   TrainConfig(iterations=20, seeds=2, eval_every=10))
    with Store(tmp_path / "s.sqlite") as store:
        run(spec, store)
        key = store.runs()[0]["key"]
        rows = store.curves(key)
        seeds = store.seeds(key)
    assert sorted({(r["seed"], r["step"]) for r in rows}) == [(s, t) for s in (0, 1) for t in (0, 10, 20)]
    for r in rows:
        assert 0 < r["diag.body.unit.gate_mean"] < 1 and r["diag.body.recurrent_offdiagonal_abs_max"] >= 0
    assert all("diag.head.gate_mean" in s and "diag.head.gate_mean_init" in s for s in seeds)
