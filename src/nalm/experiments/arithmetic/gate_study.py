"""A controlled experiment on the recurrent NALU cell's failure at a + b (issue 21): the same cell and training as
the NALU cell's acceptance row, with its gate frozen at g (``unit_options="gate=fixed,gate_value=g"``, on both
NALUs) instead of learned. At g = 1 the cell is exactly the NAC cell (the same initial weights, seed for seed).

The cause it tests: the learned gate g = σ(G [x_t, h_{t−1}]) of the paper's NALU, without a bias, stays near 0.5 on
zero-centred inputs, so a share 1 − g of every step's output comes from the multiplicative path, exp(W log(|z| + ε)),
which is heavy-tailed where inputs or the state are near 0. The prediction: the error grows as g moves away from 1,
the cell fits only at g = 1, and the learned gate (stored with every evaluation, ``diag.body.unit.gate_mean``) fails
like the frozen gates short of 1. The learned gate also runs at 5× the budget, to see whether more training changes the picture.
"""

from __future__ import annotations

import dataclasses
import math

from nalm.engine.experiment import RunSpec
from nalm.engine.reporting import best_runs, figure_name, new_figure, num, seed_median, table
from nalm.nn.models import parse_options

#: The frozen gates of the study, from the additive path outwards.
GATES = (1.0, 0.999, 0.99, 0.9)
#: The learned gate runs once more at this many times the row's iterations.
BUDGET = 5
GATE_METRIC = "diag.body.unit.gate_mean"


def options(gate: float) -> str:
    return f"gate=fixed,gate_value={gate:g}"


def specs(spec_for, train) -> list[RunSpec]:
    """The study's runs: ``spec_for(unit_options, train)`` builds the NALU cell's a + b row; the frozen gates at
    the row's budget, and the learned gate once more at BUDGET × its iterations (does the trend continue?)."""
    longer = dataclasses.replace(train, iterations=BUDGET * train.iterations)
    return [spec_for(options(g), train) for g in GATES] + [spec_for("", longer)]


def _gate_of(run: dict) -> float | None:
    """The frozen gate of a study run; None for the learned gate (no unit options)."""
    opts = parse_options(run["config"]["task"].get("unit_options", ""))
    return float(opts["gate_value"]) if opts.get("gate") == "fixed" else None


def _runs(ctx) -> tuple[dict, dict | None, dict | None]:
    """{frozen gate: its run}, the learned gate's run at the same budget, and the learned gate's longest run (if
    longer), NALU cell on a + b."""
    mine = [r for r in ctx.runs if r["config"]["model"] == "nalu-nalu" and r["config"]["task"]["operation"] == "add"
            and set(parse_options(r["config"]["task"].get("unit_options", ""))) <= {"gate", "gate_value"}]
    frozen = best_runs([r for r in mine if _gate_of(r) is not None], _gate_of)
    if not frozen:
        return {}, None, None
    budget = max(r["config"]["train"]["iterations"] for r in frozen.values())
    learned = [r for r in mine if _gate_of(r) is None]
    same = best_runs([r for r in learned if r["config"]["train"]["iterations"] == budget], lambda r: 0).get(0)
    longer = best_runs([r for r in learned if r["config"]["train"]["iterations"] > budget], lambda r: 0).get(0)
    return frozen, same, longer


def _learned_gate(ctx, run: dict) -> float | None:
    """The median over seeds of the learned gate's mean, at each seed's best step."""
    return seed_median(ctx.store, run, GATE_METRIC)


def _error(run: dict, length: int | str) -> float:
    """The median normalised error at sequence ``length`` (0: perfect, 100: no better than at initialisation)."""
    v = (run["summary"].get("normalized_error_by_length") or {}).get(str(length))
    return math.inf if v is None else v


def why(ctx) -> str:
    """The cause shown by the study's runs in ``ctx``, one sentence with its numbers and runs; "" without them."""
    frozen, learned, longer = _runs(ctx)
    if not frozen or learned is None:
        return ""
    gates = sorted(frozen, reverse=True)
    train_len = learned["config"]["task"]["train_length"]
    test_len = learned["config"]["task"]["test_length"]
    fit = [_error(frozen[g], train_len) for g in gates]
    fit_learned = _error(learned, train_len)
    t = learned["config"]["train"]
    runs = (f"arithmetic-recurrent nalu-nalu add with unit_options=gate=fixed,gate_value=g, {t['seeds']} seeds × "
            f"{t['iterations']:,} steps")
    per_gate = ", ".join(f"{num(e, '.3g')} at g = {g:g}" for g, e in zip(gates, fit))
    text = (f"normalised error at the training length {train_len}: {per_gate}, {num(fit_learned, '.3g')} with the "
            f"learned gate (which ends at {num(_learned_gate(ctx, learned), '.2f')}, median over seeds)")
    one = frozen.get(1.0)
    budget = ("" if one is None else f"; even at g = 1 (the NAC cell) this budget reaches {num(_error(one, test_len), '.3g')} "
              f"at {test_len:,} steps")
    if longer is not None:
        budget += (f"; the learned gate at {longer['config']['train']['iterations']:,} steps: "
                   f"{num(_error(longer, train_len), '.3g')} at {train_len}, {num(_error(longer, test_len), '.3g')} at "
                   f"{test_len:,}")
    if all(a <= b for a, b in zip(fit, fit[1:])) and fit[0] < 1 <= min(fit[1:] + [fit_learned]):
        return (f"The gate: any share of the multiplicative path, whose output on zero-centred inputs and a zero "
                f"state is heavy-tailed, spoils even the fit of the training lengths ({text}; {runs}{budget}).")
    return f"The gate study ({runs}) does not single out the gate: {text}{budget}."


def section(ctx, folder) -> list[str]:
    """The study's table and figure (the learned gate of every seed against the step; the error against g)."""
    frozen, learned, longer = _runs(ctx)
    if not frozen or learned is None:
        return []
    train_len, test_len = learned["config"]["task"]["train_length"], learned["config"]["task"]["test_length"]

    def row(label, r):
        s = r["summary"]
        return [label, f"{r['config']['train']['iterations']:,}", str(s["seeds"]), num(_error(r, train_len), ".3g"),
                num(_error(r, 100), ".3g"), num(_error(r, test_len), ".3g"), str(s["successes"])]

    rows = [row(f"frozen at {g:g}" + (" (= the NAC cell)" if g == 1 else ""), frozen[g])
            for g in sorted(frozen, reverse=True)]
    rows += [row(f"learned (ends at {num(_learned_gate(ctx, r), '.2f')})", r) for r in (learned, longer) if r]
    lines = ["### Controlled run: the NALU cell's gate on a + b", "",
             "The NALU cell's a + b row with its gate frozen (on both NALUs) instead of learned; everything else as "
             "that row. " + why(ctx), "",
             *table(["gate g", "steps", "seeds", f"normalised error at {train_len}", "at 100", f"at {test_len:,}",
                     "successes"], rows), ""]
    name = figure_name("nalu_cell_gate", 0)
    if _figure(ctx, learned, frozen, folder / name, train_len):
        lines += [f"![The learned gate of each seed against the step; the fit against the frozen gate]({name})", ""]
    return lines


def _figure(ctx, learned: dict, frozen: dict, path, train_len: int) -> bool:
    fig = new_figure((11, 4.2))
    if fig is None:
        return False
    left, right = fig.subplots(1, 2)
    curves: dict[int, list[tuple[int, float]]] = {}
    for row in ctx.store.curves(learned["key"]):
        if row.get(GATE_METRIC) is not None:
            curves.setdefault(row["seed"], []).append((row["step"], row[GATE_METRIC]))
    for seed, points in sorted(curves.items()):
        left.plot(*zip(*points), lw=0.8, alpha=0.7)
    left.set(xlabel="training step", ylabel="mean gate g (1: additive path)", ylim=(0, 1.02),
             title=f"learned gate, each of {len(curves)} seeds")
    left.axhline(1.0, color="k", lw=0.6, ls=":")
    gates = sorted(frozen, reverse=True)
    labels = [f"{g:g}" for g in gates] + ["learned"]
    errors = [_error(frozen[g], train_len) for g in gates] + [_error(learned, train_len)]
    right.bar(labels, [max(e, 1e-4) for e in errors], color=["tab:blue"] * len(gates) + ["tab:red"])
    right.set(xlabel="gate g", ylabel=f"normalised error at {train_len} steps (median)", yscale="log",
              title="the fit of the training lengths against the gate")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


# -- the static NALU (Table 1's static rows) ---------------------------------------------------------------------------
#: Each operation with the gate frozen on the path that computes it: 1 (additive: the NALU is then the NAC) on a + b,
#: 0 (multiplicative: the NAC•) on a × b.
STATIC_GATES = {"add": 1.0, "mul": 0.0}
#: The same failure, published on the same static task.
PUBLISHED = ("Madsen & Johansen (ICLR 2020, Table 2; this task at 100 seeds × 5·10⁶ steps) report the same failure: "
             "the NALU succeeds in 14 % of the seeds on + and −, 0 % on × and a², 2 % on √a, and the NAC• (the "
             "multiplicative path alone) in 31 % on ×")


def static_specs(train) -> list[RunSpec]:
    """The static controlled runs: nalu-nalu on each operation of :data:`STATIC_GATES` with the gate frozen."""
    return [RunSpec("arithmetic", "nalu-nalu", {"operation": op, "unit_options": options(g)}, train)
            for op, g in STATIC_GATES.items()]


def static_why(ctx) -> str:
    """The static NALU's cause: per operation of :data:`STATIC_GATES`, the learned gate against the gate frozen on
    that operation's own path, and what the pair shows (the learned gate already extrapolates; the gate is at fault:
    frozen, the path extrapolates; the path itself fails: frozen, it does not), after the published failure; the
    published failure alone without the runs."""
    mine = [r for r in ctx.runs if r["config"]["model"] == "nalu-nalu" and r.get("summary")]
    parts = []
    for op, g in STATIC_GATES.items():
        ops = [r for r in mine if r["config"]["task"]["operation"] == op]
        learned = best_runs([r for r in ops if _gate_of(r) is None], lambda r: 0).get(0)
        frozen = best_runs([r for r in ops if _gate_of(r) == g], lambda r: 0).get(0)
        if learned is None or frozen is None:
            continue
        e1, e2 = (r["summary"].get("normalized_extrapolation_error") for r in (learned, frozen))
        e1, e2 = (math.inf if e is None else e for e in (e1, e2))
        shows = ("the learned gate already extrapolates" if e1 < 1 else "the gate is at fault" if e2 < 1
                 else "the path itself fails")
        t = frozen["config"]["train"]
        parts.append(f"{'a + b' if op == 'add' else 'a × b'}: learned gate {num(e1, '.3g')} "
                     f"({learned['summary']['successes']} of {learned['summary']['seeds']} seeds succeed), gate frozen "
                     f"at {g:g} {num(e2, '.3g')} ({frozen['summary']['successes']} of {frozen['summary']['seeds']}; "
                     f"arithmetic nalu-nalu {op} with unit_options={options(g)}, {t['iterations']:,} steps): {shows}")
    if not parts:
        return PUBLISHED + "."
    return f"{PUBLISHED}. Normalised extrapolation error, median over seeds: " + "; ".join(parts) + "."
