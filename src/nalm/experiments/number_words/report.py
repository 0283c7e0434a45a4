"""The report section and the claims of ``number-words`` (Table 3 and Figure 3 of Trask et al. 2018): per setting,
the MAE of each output layer on the three splits beside what the paper says of it, and Figure 3 (the prediction
after each token of a few test numbers)."""

from __future__ import annotations

import math

import numpy as np

from nalm.engine.experiment import NOT_REPRODUCED, NOT_RUN, REPRODUCED, Verdict
from nalm.engine.reporting import colors, figure_name, median, new_figure, num, seed_median, settings, table

from . import task as nw

#: What the paper says of each row (§4.3; the published Table 3 values are not in our verified sources).
PAPER_CLAIMS = {"linear": "overfits badly, generalises poorly", "nac": "underfits train and test",
                "nalu": "generalises best, by a large margin"}
ROW_LABELS = {"linear": "LSTM (linear output)", "nac": "LSTM + NAC", "nalu": "LSTM + NALU"}
MODEL_ORDER = ("linear", "nac", "nalu")
#: The controlled run's output scale: the unit learns value / SCALE, so numbers up to 999 need outputs below 10,
#: which the NALU's additive path (|h| < 1 through |W| ≤ 1 from 10 hidden units) can reach.
SCALE = 100.0
GATE = "diag.output.gate_mean"


def _select(runs: list[dict]) -> dict:
    """{model: its run chosen as a practitioner would}: among its runs with the most seeds × iterations, the one with
    the lowest median validation MAE (learning rates and batch sizes are chosen on validation, never on test)."""
    def rank(r):
        v = (r["summary"] or {}).get("validation_mae_median")
        return r["config"]["train"]["seeds"] * r["config"]["train"]["iterations"], -(math.inf if v is None else v)

    out: dict = {}
    for r in runs:
        if (m := r["config"]["model"]) not in out or rank(r) > rank(out[m]):
            out[m] = r
    return out


def _strongest(ctx, scale: float = 1.0) -> dict:
    """:func:`_select` over the runs at the paper's sizes (embedding 256, LSTM 10) and output ``scale``."""
    return _select([r for r in ctx.runs if (r["config"]["task"].get("embedding_size"), r["config"]["task"].get(
        "hidden_size")) == (256, 10) and _scale(r) == scale and r["summary"]])


def _scale(run: dict) -> float:
    return float(run["config"]["task"].get("output_scale", 1.0))


def _mae(run: dict, split: str) -> float | None:
    return run["summary"].get(f"{split}_mae_median")


def _fmt(v) -> str:
    return num(v, ".3g") if v is not None and abs(v) < 1000 else num(v, ",.0f")


def overfits(ctx) -> Verdict:
    if (run := _strongest(ctx).get("linear")) is None:
        return Verdict(NOT_RUN, "no finished run of the LSTM with a linear output")
    tr, te = _mae(run, "train"), _mae(run, "test")
    ok = tr is not None and te is not None and te >= 2 * tr
    return Verdict(REPRODUCED if ok else NOT_REPRODUCED,
                   f"LSTM (linear output), median over {run['summary']['seeds']} seeds: train MAE {_fmt(tr)}, "
                   f"test MAE {_fmt(te)} (overfitting means test ≥ 2 × train)")


def underfits(ctx) -> Verdict:
    if (run := _strongest(ctx).get("nac")) is None:
        return Verdict(NOT_RUN, "no finished run of LSTM + NAC")
    s = run["summary"]
    tr, te, ctr, cte = _mae(run, "train"), _mae(run, "test"), s["constant_train_mae"], s["constant_test_mae"]
    ok = tr is not None and te is not None and tr >= 0.5 * ctr and te >= 0.5 * cte
    return Verdict(REPRODUCED if ok else NOT_REPRODUCED,
                   f"LSTM + NAC, median over {s['seeds']} seeds: train MAE {_fmt(tr)}, test MAE {_fmt(te)}; a "
                   f"constant (the training median) scores {_fmt(ctr)} and {_fmt(cte)} (underfitting means at "
                   f"least half of those on both)")


def generalises_best(ctx, scale: float = 1.0) -> Verdict:
    best = _strongest(ctx, scale)
    if "nalu" not in best:
        return Verdict(NOT_RUN, "no finished run of LSTM + NALU")
    others = {m: _mae(best[m], "test") for m in ("linear", "nac") if m in best}
    if not others:
        return Verdict(NOT_RUN, "LSTM + NALU ran, but neither the linear nor the NAC output to compare with")
    nalu = _mae(best["nalu"], "test")
    ok = nalu is not None and all(2 * nalu <= v for v in others.values() if v is not None)
    text = ", ".join(f"{ROW_LABELS[m]} {_fmt(v)}" for m, v in others.items())
    missing = [ROW_LABELS[m] for m in ("linear", "nac") if m not in best]
    v = Verdict(REPRODUCED if ok else NOT_REPRODUCED,
                f"median test MAE: LSTM + NALU {_fmt(nalu)}; {text} (a large margin means at most half of each)"
                + (f"; not run: {', '.join(missing)}" if missing else ""))
    return v if ok else Verdict(v.answer, v.evidence, _scale_why(ctx) if scale == 1.0 else _gate_why(ctx, scale))


def generalises_best_scaled(ctx) -> Verdict:
    return generalises_best(ctx, SCALE)


def _scale_why(ctx) -> str:
    """The cause the scaled runs show (or do not), one sentence with the runs; "" without them."""
    scaled = generalises_best(ctx, SCALE)
    if scaled.answer == NOT_RUN:
        return ""
    best = _strongest(ctx, SCALE)["nalu"]
    t, gates = best["config"]["train"], {s: _gates(ctx, r) for s, r in ((1.0, _strongest(ctx).get("nalu")),
                                                                         (SCALE, best))}
    runs = f"number-words */scale{SCALE:g}, {t['seeds']} seeds × {t['iterations']:,} steps, protocol chosen on validation"
    gate = (f"; the NALU's gate (1: additive path) ends at {num(gates[1.0], '.2f')} unscaled and "
            f"{num(gates[SCALE], '.2f')} scaled (medians over seeds)") if None not in gates.values() else ""
    if scaled.answer == REPRODUCED:
        return (f"The output's scale: unscaled, the NALU's additive path reads |h| < 1 through |W| ≤ 1 and reaches "
                f"at most {best['config']['task'].get('hidden_size', 10)}, so numbers to 999 must come through its "
                f"multiplicative path; with every output × {SCALE:g} the claim holds ({scaled.evidence}; {runs}"
                f"{gate}).")
    return (f"Not the output's scale alone: with every output × {SCALE:g} it still fails ({scaled.evidence}; "
            f"{runs}{gate}). " + _gate_why(ctx, SCALE)).strip()


def _gate_why(ctx, scale: float) -> str:
    """The cause the NAC row shows at ``scale``: it is the NALU's additive path alone (the gate frozen at 1); "" without
    it."""
    best = _strongest(ctx, scale)
    if "nac" not in best or "nalu" not in best:
        return ""
    nac, nalu, linear = (_mae(best[m], "test") if m in best else None for m in ("nac", "nalu", "linear"))
    if nac is None or nalu is None:
        return ""
    t, gate = best["nalu"]["config"]["train"], _gates(ctx, best["nalu"])
    text = (f"median test MAE: the additive path alone (LSTM + NAC) {_fmt(nac)}, the learned gate (LSTM + NALU) "
            f"{_fmt(nalu)}" + (f", whose gate ends at {num(gate, '.2f')}" if gate is not None else "")
            + (f"; the linear output {_fmt(linear)}" if linear is not None else "")
            + f"; number-words nac and nalu/scale{scale:g}, {t['seeds']} seeds × {t['iterations']:,} steps, each "
              f"model's learning rate chosen on validation")
    if nac <= 0.75 * nalu:
        return (f"The gate: the NAC is this NALU's additive path with its gate frozen at 1; mixing in the "
                f"multiplicative path makes the learned NALU worse, and the additive path alone is no better than a "
                f"linear readout of the LSTM, so no margin is left to win ({text}).")
    return f"The NAC row does not single out the gate ({text})."


def _gates(ctx, run: dict | None) -> float | None:
    """The median over seeds of the output NALU's mean gate at each seed's best step."""
    return seed_median(ctx.store, run, GATE)


def section(ctx) -> list[str]:
    """The report section: Table 3 beside the paper's words, Figure 3, per setting."""
    lines = ["## Table 3 and Figure 3: number words to numbers", "", INTRO, "",
             f"Vocabulary ({len(nw.VOCABULARY) - 1} words, one token each, and the pad id 0): "
             + ", ".join(f"`{w}`" for w in nw.VOCABULARY[1:]) + ".", ""]
    for k, setting in enumerate(settings(ctx.runs, _setting_key, _describe)):
        lines += _setting_section(setting, ctx, figure_name("figure3_number_words", k))
    return lines + _gate_section(ctx)


def _gate_section(ctx) -> list[str]:
    """The controlled runs behind the NALU's *why*: the output scale, and the NAC as the gate frozen at 1."""
    whys = [w for w in (_scale_why(ctx),) if w]
    if not whys:
        return []
    lines = ["### Controlled runs: why LSTM + NALU does not generalise best", "", *(f"- {w}" for w in whys), ""]
    name = "number_words_gate.png"
    if _gate_figure(ctx, ctx.folder / name):
        lines += [f"![Test MAE per seed against the output unit's gate]({name})", "",
                  "*Each seed's test MAE against its output unit's mean gate (1: the additive path alone) at its best "
                  "validation step; the NAC is the gate frozen at 1, the dashed lines the linear output's median. "
                  "Unscaled, the additive path cannot reach the targets and the NALU leans on its multiplicative "
                  "path; scaled, the additive path is enough, yet the learned gate stays between the paths.*", ""]
    return lines


def _gate_figure(ctx, path) -> bool:
    fig = new_figure((6.5, 4.2))
    if fig is None:
        return False
    ax, cmap, drawn = fig.add_subplot(), colors("tab10"), False
    for i, scale in enumerate((1.0, SCALE)):
        best = _strongest(ctx, scale)
        label = "unscaled" if scale == 1.0 else f"outputs × {scale:g}"
        for m, marker in (("nalu", "o"), ("nac", "s")):
            rows = ctx.store.seeds(best[m]["key"]) if m in best else []
            pts = [(1.0 if m == "nac" else r.get(GATE), r.get("test_mae")) for r in rows]
            pts = [(g, v) for g, v in pts if g is not None and v is not None and math.isfinite(v)]
            if pts:
                ax.scatter(*zip(*pts), marker=marker, color=cmap(i), alpha=0.7,
                           label=f"{ROW_LABELS[m]}, {label}")
                drawn = True
        if "linear" in best and (v := _mae(best["linear"], "test")) is not None:
            ax.axhline(v, color=cmap(i), ls="--", lw=1, label=f"{ROW_LABELS['linear']}, {label} (median)")
    if not drawn:
        return False
    ax.set(yscale="log", xlabel="output unit's mean gate at the best step (1: additive path)",
           ylabel="test MAE", title="Number words: test error against the NALU's gate, per seed")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


INTRO = ("The numbers 0–999 in British English words (\"seven hundred and two\"), split as the paper does: 0–19 and "
         "a random sample, adjusted so that every word occurs in training, make 169 training numbers; 200 validation "
         "and 631 test numbers, the same for every model and seed. Model (the NALU authors' correspondence quoted by "
         "Madsen & Johansen 2020): embedding 256 → LSTM 10 → the output unit on the state after the last token; "
         "squared error, Adam. Each seed's best step is its lowest validation MAE. The paper's Table 3 values are "
         "not in our verified sources, so its claims (§4.3) stand beside our numbers, and a constant prediction "
         "(the training median) is the yardstick of \"learned nothing\".")


def _training(t: dict) -> str:
    extra = "".join([f", {t['optimizer']}" if t.get("optimizer", "adam") != "adam" else "",
                     f", clipped at {t['grad_clip']:g}" if t.get("grad_clip") is not None else ""])
    return (f"{t['seeds']} seeds × {t['iterations']:,} steps, batch {min(t['batch_size'], 169)}, "
            f"lr {t['learning_rate']:g}{extra}")


def _setting_key(c: dict) -> dict:
    """A setting is the task without the figure's numbers; model and training vary inside (one row each)."""
    return {k: v for k, v in c["task"].items() if k != "figure_numbers"}


def _describe(c: dict) -> str:
    t = c["task"]
    return (f"embedding {t['embedding_size']} → LSTM {t['hidden_size']} → output unit, split seed {t['split_seed']}")


def _model_rank(model: str) -> tuple:
    return (MODEL_ORDER.index(model), "") if model in MODEL_ORDER else (len(MODEL_ORDER), model)


def _cell(s: dict, split: str) -> str:
    if s.get(f"{split}_mae_median") is None:
        return "n/a"
    return f"{_fmt(s[f'{split}_mae_median'])} [{_fmt(s[f'{split}_mae_q25'])}, {_fmt(s[f'{split}_mae_q75'])}]"


def _setting_section(setting: dict, ctx, name: str) -> list[str]:
    lines = [f"### {setting['title']}", ""]
    runs = sorted(setting["runs"], key=lambda r: (_model_rank(r["config"]["model"]), -r["config"]["train"][
        "seeds"] * r["config"]["train"]["iterations"]))
    selected = _select(setting["runs"])
    rows, chosen = [], {r["key"] for r in selected.values()}
    for r in runs:
        s, m = r["summary"] or {}, r["config"]["model"]
        label = ROW_LABELS.get(m, f"LSTM + {m}")
        several = sum(q["config"]["model"] == m for q in runs) > 1
        rows.append([f"**{label}**" if r["key"] in chosen and several else label, _training(r["config"]["train"]),
                     str(s.get("diverged", "n/a")), _cell(s, "train"), _cell(s, "validation"), _cell(s, "test"),
                     num(s.get("best_step_median"), ",.0f"), PAPER_CLAIMS.get(m, "—")])
    const = nw.constant_errors(setting["config"]["task"]["split_seed"])
    rows.append(["constant (training median)", "—", "—", *(_fmt(const[k]) for k in nw.SPLITS), "—",
                 "(the yardstick of learning nothing)"])
    lines += ["**Table 3** (MAE, median [interquartile range] over seeds, at each seed's best validation step)", ""]
    lines += table(["model", "training", "diverged", "train MAE", "validation MAE", "test MAE", "best step (median)",
                    "paper (§4.3)"], rows)
    h = setting["config"]["task"]["hidden_size"]
    lines += ["Bold: of a model's several runs, the one the claims use (most seeds × steps, then the lowest "
              f"validation MAE). An NAC on {h} LSTM units cannot output more than {h} (|h| < 1, |W| ≤ 1): that row "
              "is capped by construction.", ""]
    panels = []
    for m, r in sorted(selected.items(), key=lambda kv: _model_rank(kv[0])):
        if art := ctx.store.artifact(r["key"], "figure3"):
            panels.append((ROW_LABELS.get(m, f"LSTM + {m}"), art))
    panels = [p for p in panels if [i["number"] for i in p[1]["numbers"]] == [i["number"] for i in panels[0][1][
        "numbers"]]]  # runs of other figure numbers would mislabel the rows
    if panels and _figure3(ctx.folder / name, panels, setting["title"]):
        tracking = ", ".join(f"{label} {_fmt(_tracking(art))}" for label, art in panels)
        lines += [f"![Figure 3: running estimates after each token ({setting['title']})]({name})", "",
                  "*Figure 3.* The output unit applied after every token of test numbers the models never saw, at "
                  "each seed's best step: thin lines are seeds, dots and numbers their median, the grey dashes the "
                  "value of the words read so far (\"seven hundred\" → 700). How well the running estimate tracks "
                  f"that value (mean |estimate − value so far| over these tokens, median over seeds): {tracking}.",
                  ""]
    return lines


def _tracking(art: dict) -> float | None:
    """Per seed, the mean |running estimate − value of the words so far| over every token of the figure's numbers;
    the median over seeds (the paper: the NALU "learns to track reasonable estimates" of unseen numbers)."""
    errors = [np.abs(np.array(item["estimates"], dtype=float) - np.array(item["ideal"], dtype=float))
              for item in art["numbers"]]
    return median(np.concatenate(errors, axis=1).mean(axis=1).tolist())


def _figure3(path, panels: list[tuple[str, dict]], title: str) -> bool:
    """Figure 3: one panel per (test number, model); tokens along the axis, the estimates after each above them."""
    fig = new_figure(figsize=(4.2 * len(panels), 2.4 * len(panels[0][1]["numbers"]) + 0.6))
    if fig is None:
        return False
    axes = fig.subplots(len(panels[0][1]["numbers"]), len(panels), squeeze=False)
    cmap = colors("tab10")
    for j, (label, art) in enumerate(panels):
        for i, item in enumerate(art["numbers"]):
            ax, k = axes[i][j], len(item["words"])
            est = np.array([[np.nan if v is None else v for v in row] for row in item["estimates"]], dtype=float)
            med = np.array([np.nan if (v := median(est[:, t].tolist())) is None else v for t in range(k)])
            ideal = np.asarray(item["ideal"], dtype=float)
            finite = np.concatenate([ideal, med[np.isfinite(med)], [0.0]])
            pad = 0.2 * (finite.max() - finite.min()) + 10
            lo, hi = finite.min() - pad, finite.max() + pad
            x = np.arange(k)
            for row in est:
                ax.plot(x, np.clip(row, lo, hi), color=cmap(j % 10), alpha=0.3, lw=0.8, marker=".", ms=3)
            ax.plot(x, ideal, ls="--", color="0.45", marker="x", lw=1, label="value of the words so far")
            ax.plot(x, np.clip(med, lo, hi), "o", color=cmap(j % 10), ms=5, label="median over seeds")
            for t, v in enumerate(med):
                if np.isfinite(v):
                    ax.annotate(f"{v:.0f}", (t, min(max(v, lo), hi)), textcoords="offset points", xytext=(0, 6),
                                ha="center", fontsize=8)
            ax.set_xticks(x, item["words"], fontsize=8)
            ax.set_xlim(-0.6, k - 0.4) if k > 1 else ax.set_xlim(-1, 1)
            ax.set_ylim(lo, hi + 0.12 * (hi - lo))
            ax.tick_params(axis="y", labelsize=7)
            ax.grid(True, axis="y", alpha=0.3)
            if i == 0:
                ax.set_title(f"{label} ({len(art['seeds'])} seeds)", fontsize=9)
                ax.legend(fontsize=7, loc="upper left")
            if j == 0:
                ax.set_ylabel(f"test number {item['number']}", fontsize=9)
    fig.suptitle(f"Figure 3: running estimate after each token, test numbers\n{title}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True
