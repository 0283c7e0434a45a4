"""The controlled run on the recurrent NALU cell's gate (experiments/arithmetic/gate_study.py): the frozen gate, the
unit options that carry it, and the claim's verdict and *why* on hand-made stores."""

from __future__ import annotations

import pytest
import torch

from nalm import ConfigError, get_unit
from nalm.engine import NOT_REPRODUCED, NOT_RUN, REPRODUCED, ReportContext, RunSpec, TrainConfig, get_experiment
from nalm.engine.metrics import summarize
from nalm.engine.store import Store, config_key
from nalm.experiments.arithmetic import gate_study
from nalm.nn.models import build_model, parse_options

NALU_CLAIM = get_experiment("arithmetic-recurrent").claims[1]


def test_a_nalu_with_its_gate_frozen_at_1_is_the_nac_seed_for_seed():
    gens = lambda: [torch.Generator().manual_seed(s) for s in (3, 4)]  # noqa: E731
    nac = build_model("nac-nac", 5, hidden_size=2, num_seeds=2, recurrent=True)
    frozen = build_model("nalu-nalu", 5, hidden_size=2, num_seeds=2, recurrent=True,
                         unit_options={"gate": "fixed", "gate_value": 1.0})
    nac.reset_parameters(gens())
    frozen.reset_parameters(gens())
    x = torch.randn(1, 7, 30, 5)
    assert torch.equal(nac(x), frozen(x))
    half = get_unit("nalu", 2, 1, gate="fixed", gate_value=0.25)
    with torch.no_grad():
        half.W_hat.fill_(100.0)
        half.M_hat.fill_(100.0)  # W = [1, 1]: a = x1 + x2, m = x1 · x2
    assert half(torch.tensor([[2.0, 3.0]])).item() == pytest.approx(0.25 * 5 + 0.75 * 6, rel=1e-5)


def test_unit_options_are_parsed_checked_and_kept_out_of_old_keys():
    assert parse_options("gate=fixed,gate_value=0.99, eps=1,tied=false") == {
        "gate": "fixed", "gate_value": 0.99, "eps": 1, "tied": False}
    with pytest.raises(ConfigError, match="key=value"):
        parse_options("gate")
    with pytest.raises(ConfigError, match="gate_value"):
        RunSpec("arithmetic-recurrent", "nalu-nalu", {"unit_options": "gate_value=0.5"})  # gate not fixed
    with pytest.raises(ConfigError, match="has no option"):
        RunSpec("arithmetic-recurrent", "nau-nau", {"unit_options": "gate=fixed"})
    plain = RunSpec("arithmetic-recurrent", "nalu-nalu", {"operation": "add"}).resolved()
    assert "unit_options" not in plain["task"]  # runs stored before the option existed keep their keys
    study = RunSpec("arithmetic-recurrent", "nalu-nalu", {"unit_options": gate_study.options(0.99)})
    assert study.resolved()["task"]["unit_options"] == "gate=fixed,gate_value=0.99"
    assert study.name.endswith("/gate=fixed,gate_value=0.99")


def _store(path, fits: dict, learned_gate: float = 0.5, seeds: int = 4, longer: float | None = None):
    """Recurrent NALU runs on every claimed operation (a + b with the learned gate fitting the training length to
    `fits[None]`), the gate study's runs at each frozen gate g with `fits[g]`, and optionally the learned gate at 5×
    the steps with `longer`. Normalised errors at 100 and 1000 steps are 10 × and 100 × the fit."""
    def add(store, task, err, iterations=100):
        spec = RunSpec("arithmetic-recurrent", "nalu-nalu", task, TrainConfig(iterations=iterations, seeds=seeds))
        records = [{"seed": s, "success": 0, "diverged": 0, "extrapolation_mse": 1.0, "extrapolation_mse_init": 1.0,
                    "interpolation_mse": 0.0, "interpolation_mse_init": 1.0, gate_study.GATE_METRIC: learned_gate}
                   for s in range(seeds)]
        summary = {**summarize(records), "normalized_error_by_length": {"10": err, "100": 10 * err, "1000": 100 * err}}
        key = config_key(spec.resolved())
        store.start_run(key, spec.experiment, spec.name, spec.resolved())
        store.finish_run(key, records, summary, 1.0)

    with Store(path) as store:
        for op in ("sub", "mul", "squared", "root"):
            add(store, {"operation": op} | ({"interpolation_range": "1,2", "extrapolation_range": "1,2"}
                                            if op == "root" else {}), 100.0)
        for gate, err in fits.items():
            add(store, {"operation": "add"} | ({"unit_options": gate_study.options(gate)} if gate is not None else {}),
                err)
        if longer is not None:
            add(store, {"operation": "add"}, longer, iterations=500)
    return Store(path, readonly=True)


def _verdict(store):
    return NALU_CLAIM.verdict(ReportContext(store, store.runs(), None))


def test_why_names_the_gate_when_the_fit_falls_with_it(tmp_path):
    store = _store(tmp_path / "s.sqlite", {None: 98.0, 1.0: 0.02, 0.999: 5.0, 0.99: 60.0, 0.9: 99.0}, 0.47,
                   longer=97.0)
    v = _verdict(store)
    assert v.answer == NOT_REPRODUCED
    assert v.why.startswith("The gate: any share of the multiplicative path")
    assert ("normalised error at the training length 10: 0.02 at g = 1, 5 at g = 0.999, 60 at g = 0.99, 99 at "
            "g = 0.9, 98 with the learned gate (which ends at 0.47") in v.why
    assert "4 seeds × 100 steps" in v.why and "even at g = 1 (the NAC cell) this budget reaches 2 at 1,000" in v.why
    assert "the learned gate at 500 steps: 97 at 10, 9.7e+03 at 1,000" in v.why


def test_why_says_so_when_the_study_does_not_single_out_the_gate(tmp_path):
    store = _store(tmp_path / "s.sqlite", {None: 98.0, 1.0: 50.0, 0.999: 0.5, 0.99: 60.0, 0.9: 90.0})
    why = _verdict(store).why
    assert why.startswith("The gate study (arithmetic-recurrent nalu-nalu add") and "does not single out" in why


def test_no_why_without_the_study_and_none_on_other_answers(tmp_path):
    store = _store(tmp_path / "s.sqlite", {None: 98.0})
    v = _verdict(store)
    assert v.answer == NOT_REPRODUCED and v.why == ""
    assert NALU_CLAIM.verdict(ReportContext(store, [], None)).answer == NOT_RUN


def test_the_claim_holds_when_every_operation_extrapolates(tmp_path):
    store = _store(tmp_path / "s.sqlite", {None: 1.0, 1.0: 0.0})
    ctx_runs = [dict(r, summary={**r["summary"], "normalized_extrapolation_error": 1e-6}) for r in store.runs()]
    v = NALU_CLAIM.verdict(ReportContext(store, ctx_runs, None))
    assert v.answer == REPRODUCED and v.why == ""


def test_the_nalu_claim_reads_products_on_positive_inputs_where_they_ran(tmp_path):
    """× and a² by the NALU are judged on U[1, 2] (its log path drops the sign) when such a run exists."""
    train = TrainConfig(iterations=100, seeds=2)
    with Store(tmp_path / "s.sqlite") as store:
        for rng, err in (("-1,1", 1.0), ("1,2", 1e-9)):
            spec = RunSpec("arithmetic-recurrent", "nalu-nalu", {"operation": "mul", "interpolation_range": rng,
                                                                 "extrapolation_range": rng}, train)
            records = [{"seed": s, "success": 0, "diverged": 0, "extrapolation_mse": err,
                        "extrapolation_mse_init": 1.0, "interpolation_mse": 0.0, "interpolation_mse_init": 1.0}
                       for s in range(2)]
            key = config_key(spec.resolved())
            store.start_run(key, spec.experiment, spec.name, spec.resolved())
            store.finish_run(key, records, summarize(records), 1.0)
        v = NALU_CLAIM.verdict(ReportContext(store, store.runs(), None))
    assert v.answer == REPRODUCED  # the zero-centred row (error 100) is not the one judged
    assert v.evidence.endswith("nalu-nalu a × b on U[1,2]: 1.0e-07")


STATIC_CLAIM = get_experiment("arithmetic").claims[1]


def _static_store(path, errors: dict):
    """Static nalu-nalu runs: `errors` maps (operation, frozen gate or None) to the median normalised extrapolation
    error; every other claimed operation fails (100)."""
    with Store(path) as store:
        for (op, gate), err in {**{(op, None): 100.0 for op in ("sub", "squared", "root")}, **errors}.items():
            task = {"operation": op} | ({"unit_options": gate_study.options(gate)} if gate is not None else {})
            spec = RunSpec("arithmetic", "nalu-nalu", task, TrainConfig(iterations=100, seeds=4))
            records = [{"seed": s, "success": int(err < 1), "diverged": 0, "extrapolation_mse": err / 100,
                        "extrapolation_mse_init": 1.0, "interpolation_mse": 0.0, "interpolation_mse_init": 1.0}
                       for s in range(4)]
            key = config_key(spec.resolved())
            store.start_run(key, spec.experiment, spec.name, spec.resolved())
            store.finish_run(key, records, summarize(records), 1.0)
    return Store(path, readonly=True)


def test_the_static_nalus_why_names_the_published_failure_and_the_frozen_gate_runs(tmp_path):
    store = _static_store(tmp_path / "a.sqlite", {("add", None): 50.0, ("add", 1.0): 0.01, ("mul", None): 90.0,
                                                  ("mul", 0.0): 80.0})
    v = STATIC_CLAIM.verdict(ReportContext(store, store.runs(), None))
    assert v.answer == NOT_REPRODUCED and v.why.startswith("Madsen & Johansen (ICLR 2020")
    assert "a + b: learned gate 50 (0 of 4 seeds succeed), gate frozen at 1 0.01 (4 of 4" in v.why
    assert "gate_value=1, 100 steps): the gate is at fault" in v.why
    assert "a × b: learned gate 90" in v.why and "gate_value=0, 100 steps): the path itself fails" in v.why
    # the frozen runs are controlled runs: the learned gate answers the claim
    assert "nalu-nalu a + b: 50" in v.evidence
    none = _static_store(tmp_path / "b.sqlite", {("add", None): 50.0, ("mul", None): 90.0})
    v = STATIC_CLAIM.verdict(ReportContext(none, none.runs(), None))
    assert v.why == gate_study.PUBLISHED + "."
    learned = _static_store(tmp_path / "c.sqlite", {("add", None): 0.5, ("add", 1.0): 0.01, ("mul", None): 90.0,
                                                    ("mul", 0.0): 80.0})
    why = STATIC_CLAIM.verdict(ReportContext(learned, learned.runs(), None)).why
    assert "100 steps): the learned gate already extrapolates; a × b" in why


def test_the_static_acceptance_grid_holds_the_claimed_rows_and_the_frozen_gates():
    grid = get_experiment("arithmetic").grid("acceptance")
    rows = {(s.model, s.task_config().operation, s.task_config().unit_options) for s in grid}
    assert {("nac-nac", "sub", ""), ("nalu-nalu", "root", ""), ("relu6", "squared", ""),
            ("nalu-nalu", "add", "gate=fixed,gate_value=1"), ("nalu-nalu", "mul", "gate=fixed,gate_value=0")} <= rows
