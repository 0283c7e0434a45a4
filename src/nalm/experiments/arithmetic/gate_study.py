"""A controlled experiment on the recurrent NALU cell's failure at a + b (issue 21): the same cell and training as
the NALU cell's acceptance row, with its gate frozen at g (``unit_options="gate=fixed,gate_value=g"``, on both
NALUs) instead of learned. At g = 1 the cell is exactly the NAC cell (the same initial weights, seed for seed).

The cause it tests: the learned gate g = σ(G [x_t, h_{t−1}]) of the paper's NALU, without a bias, stays near 0.5 on
zero-centred inputs, so a share 1 − g of every step's output comes from the multiplicative path; a leak that is
harmless over 10 training steps compounds over 1000 test steps. The prediction: success falls as g moves away
from 1, and the learned gate (its value is stored with every evaluation, ``diag.body.unit.gate_mean``) does worst.
"""

from __future__ import annotations

import statistics

from nalm.engine.experiment import RunSpec
from nalm.engine.reporting import best_runs, figure_name, new_figure, num, table
from nalm.nn.models import parse_options

#: The frozen gates of the study, from the additive path outwards.
GATES = (1.0, 0.999, 0.99, 0.9)
GATE_METRIC = "diag.body.unit.gate_mean"


def options(gate: float) -> str:
    return f"gate=fixed,gate_value={gate:g}"


def specs(spec_for) -> list[RunSpec]:
    """The study's runs: ``spec_for(unit_options)`` builds the NALU cell's a + b row with those options."""
    return [spec_for(options(g)) for g in GATES]


def _gate_of(run: dict) -> float | None:
    """The frozen gate of a study run; None for the learned gate (no unit options)."""
    opts = parse_options(run["config"]["task"].get("unit_options", ""))
    return float(opts["gate_value"]) if opts.get("gate") == "fixed" else None


def _runs(ctx) -> tuple[dict, dict | None]:
    """{frozen gate: its strongest run} and the learned gate's strongest run, NALU cell on a + b."""
    mine = [r for r in ctx.runs if r["config"]["model"] == "nalu-nalu" and r["config"]["task"]["operation"] == "add"
            and set(parse_options(r["config"]["task"].get("unit_options", ""))) <= {"gate", "gate_value"}]
    best = best_runs(mine, _gate_of)
    return {g: r for g, r in best.items() if g is not None}, best.get(None)


def _learned_gate(ctx, run: dict) -> float | None:
    """The median over seeds of the learned gate's mean, at each seed's best step."""
    values = [row[GATE_METRIC] for row in ctx.store.seeds(run["key"]) if row.get(GATE_METRIC) is not None]
    return statistics.median(values) if values else None


def why(ctx) -> str:
    """The cause shown by the study's runs in ``ctx``, one sentence with its numbers and runs; "" without them."""
    frozen, learned = _runs(ctx)
    if not frozen or learned is None:
        return ""
    gates = sorted(frozen, reverse=True)
    rates = [frozen[g]["summary"]["success_rate"] or 0.0 for g in gates]
    learned_rate = learned["summary"]["success_rate"] or 0.0
    g = _learned_gate(ctx, learned)
    counts = ", ".join(f"{frozen[x]['summary']['successes']}/{frozen[x]['summary']['seeds']} at g = {x:g}"
                       for x in gates)
    t = learned["config"]["train"]
    runs = (f"arithmetic-recurrent nalu-nalu add, unit_options=gate=fixed,gate_value=g, {t['seeds']} seeds × "
            f"{t['iterations']:,} steps")
    learned_text = (f"{learned['summary']['successes']}/{learned['summary']['seeds']} with the learned gate, which "
                    f"ends at {num(g, '.2f')} (median over seeds)")
    if all(a >= b for a, b in zip(rates, rates[1:])) and learned_rate <= rates[-1] and rates[0] > learned_rate:
        return (f"A gate short of 1 lets the multiplicative path into every step, and 1000 steps compound it: on "
                f"a + b the cell succeeds in {counts} and {learned_text} ({runs}; figure in the recurrent section).")
    return f"Gate study ({runs}) does not single out the gate: {counts}; {learned_text}."


def section(ctx, folder) -> list[str]:
    """The study's table and figure (the learned gate of every seed against the step; success against g)."""
    frozen, learned = _runs(ctx)
    if not frozen or learned is None:
        return []
    rows = [[f"frozen at {g:g}" + (" (= the NAC cell)" if g == 1 else ""), str(frozen[g]["summary"]["seeds"]),
             f"{frozen[g]['summary']['successes']}", num(frozen[g]["summary"]["normalized_extrapolation_error"], ".3g")]
            for g in sorted(frozen, reverse=True)]
    s = learned["summary"]
    rows.append([f"learned (ends at {num(_learned_gate(ctx, learned), '.2f')})", str(s["seeds"]), str(s["successes"]),
                 num(s["normalized_extrapolation_error"], ".3g")])
    lines = ["### Controlled run: the NALU cell's gate on a + b", "",
             "The NALU cell's a + b row with its gate frozen (on both NALUs) instead of learned; everything else "
             "as that row. " + (why(ctx) or ""), "",
             *table(["gate g", "seeds", "successes", "normalised error at 1000 steps (median)"], rows), ""]
    name = figure_name("nalu_cell_gate", 0)
    if _figure(ctx, learned, frozen, folder / name):
        lines += [f"![The learned gate of each seed against the step; success against the frozen gate]({name})", ""]
    return lines


def _figure(ctx, learned: dict, frozen: dict, path) -> bool:
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
    rates = [frozen[g]["summary"]["success_rate"] or 0 for g in gates] + [learned["summary"]["success_rate"] or 0]
    right.bar(labels, [100 * r for r in rates], color=["tab:blue"] * len(gates) + ["tab:red"])
    right.set(xlabel="gate g", ylabel="seeds that succeed at 1000 steps (%)", ylim=(0, 105),
              title="success against the gate")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True
