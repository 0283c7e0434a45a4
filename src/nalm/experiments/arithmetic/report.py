"""The report section of the arithmetic experiments: Table 1 (normalised error), Madsen & Johansen's success rates
beside their published ones, solved-at and sparsity, and the success-rate figure; one set per setting."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

from nalm.engine.ranges import Range
from nalm.engine.reporting import (best_runs, colors, figure_name, new_figure, num, range_text, rate, score, settings,
                                   table, training_text)

from . import gate_study
from .task import OPERATIONS, parse_subsets

OP_LABELS = {"add": "a + b", "sub": "a − b", "mul": "a × b", "div": "a / b", "squared": "a²", "root": "√a"}
MODEL_ORDER = ("nau-nmu", "nau-nau", "nac-nac_mul", "nac-nac", "nalu-nalu", "inalu-inalu", "npu-npu", "linear",
               "relu", "relu6", "lstm", "gru", "rnn-tanh", "rnn-relu")

#: Madsen & Johansen (2020), SPEC §3: success rates (%) over 100 seeds, 5·10⁶ iterations, hidden size 2,
#: 100 inputs, train U[1, 2], test U[2, 6]; order of OPERATIONS.
PUBLISHED_LABELS = {"nau-nmu": "NMU", "nau-nau": "NAU", "nac-nac_mul": "NAC•", "nac-nac": "NAC+",
                    "nalu-nalu": "NALU", "linear": "Linear", "relu": "ReLU", "relu6": "ReLU6"}
PUBLISHED_RATES = {m: dict(zip(OPERATIONS, r)) for m, r in {
    "nau-nmu": (0, 56, 98, 0, 100, 0), "nau-nau": (100, 100, 0, 0, 0, 0), "nac-nac_mul": (0, 0, 31, 0, 77, 7),
    "nac-nac": (100, 100, 0, 0, 0, 0), "nalu-nalu": (14, 14, 0, 0, 0, 2), "linear": (100, 7, 0, 0, 0, 0),
    "relu": (62, 0, 0, 0, 0, 0), "relu6": (0, 0, 0, 0, 0, 0)}.items()}
PUBLISHED_SOLVED_AT = {("nau-nmu", "mul"): 1.4e6, ("nau-nau", "add"): 1.8e4, ("nau-nau", "sub"): 5e3,
                       ("nalu-nalu", "add"): 1.5e6}
#: The 4-input variant t = (x1 + x2)(x1 + x2 + x3 + x4): NMU succeeds in 94 % of 100 seeds, median solved at 1.4·10⁴.
PUBLISHED_4INPUT = ({"nau-nmu": {"mul": 94}}, {("nau-nmu", "mul"): 1.4e4})
PUBLISHED_SETTING = "100 seeds × 5·10⁶ iterations, hidden size 2"

SCORES = (
    "**How to read the scores.** *Normalised error* (Trask et al. 2018, Table 1): per seed, 100 × the model's MSE "
    "÷ the MSE of the same seed's model at initialisation, on the interpolation (validation) or extrapolation (test) "
    "set, at the evaluation step with the lowest validation MSE; the median over seeds is shown. 0 is perfect, 100 "
    "is no better than the untrained model; a diverged seed counts as infinite, so \"inf\" means half or more of the "
    "seeds diverged. *Success* (Madsen & Johansen 2020): a seed succeeds when its extrapolation MSE at the "
    "best-validation step is below the threshold, the MSE of a near-perfect solution whose weights are each off by "
    "ε = 10⁻⁵, and it did not diverge; the rate is shown with its Wilson 95 % interval. *Solved at*: the first "
    "evaluation step whose extrapolation MSE is under the threshold, median over successful seeds. *Sparsity error*: "
    "max over weights of min(|W|, |1 − |W||), mean over successful seeds (0: every weight exactly 0 or ±1).")


RECURRENT_TASK = (
    "**The recurrent task** (ours; the paper does not publish its setup). Each step brings 10 inputs; a_t and b_t "
    "are the sums of two overlapping subsets of all inputs so far, and the loss counts the running target "
    "op(a_t, b_t) after every step of 1–10-step training sequences. The tests are the final targets of 1000-step "
    "sequences (and of their first 100 steps): a and b far outside anything seen in training. a + b, a − b, a × b "
    "and a² use zero-centred inputs U[−1, 1] (their sums' variance is the signal that picks the inputs); a / b and "
    "√a positive ones, U[1, 2] (b away from 0, a ≥ 0). Success: the MSE at 1000 steps under that of the cell whose "
    "every weight, input and recurrent, is off by ε = 10⁻⁵ (zero weights with random signs).")
RECURRENT_CLAIM = (
    "*Paper (Trask et al. 2018, §4.1; no numbers are reproduced here, SPEC §2.2):* the NAC cell solves a + b and "
    "a − b and the NALU cell every operation but a / b in extrapolation; LSTMs and RNNs fail to extrapolate.")


def fine_score(v) -> str:
    """A normalised error with the small ones readable: 0.0026 is "2.6e-03", not "0.0" (the recurrent units are
    exact to a few thousandths of the untrained error, the classic cells near 100)."""
    if v is not None and math.isfinite(v) and 0 < abs(v) < 0.1:
        return format(v, ".1e")
    return score(v)


def _model_rank(model: str) -> tuple:
    return (MODEL_ORDER.index(model), "") if model in MODEL_ORDER else (len(MODEL_ORDER), model)


def strongest(runs: list[dict]) -> dict:
    """{(model, operation): the run with the most seeds × iterations} over the runs with the units' own options
    (a controlled run, with ``unit_options`` set, never stands for the paper's model)."""
    return best_runs([r for r in runs if not r["config"]["task"].get("unit_options")],
                     lambda r: (r["config"]["model"], r["config"]["task"]["operation"]))


def _recurrent(config: dict) -> bool:
    return "train_length" in config["task"]


def _model_params(config: dict) -> dict:
    """Per-model hyperparameters: the hidden size and the regularisers of the units the model contains; in the
    recurrent table also the iterations, evaluation interval and learning rate (the classic cells train shorter:
    they cost more; the NAU cells slower: Adam's noise at 10⁻³ shakes their weights off the exact values)."""
    units = set(config["model"].split("-"))
    regs = {k: v for k, v in sorted(config["train"].get("regularizers", {}).items()) if k in units}
    params = {"hidden_size": config["task"].get("hidden_size"), "regularizers": regs}
    if _recurrent(config):
        tr = config["train"]
        params.update(iterations=tr["iterations"], eval_every=tr.get("eval_every", 1000),
                      learning_rate=tr.get("learning_rate", 1e-3))
    return params


def _params_text(p: dict) -> str:
    regs = ", ".join(f"{u} λ̂ = {r['scale']:g} ramped over steps {r['start']:,}–{r['end']:,}"
                     for u, r in p["regularizers"].items())
    scale = (f", {p['iterations']:,} iterations (evaluated every {p['eval_every']:,}, learning rate "
             f"{p['learning_rate']:g})" if "iterations" in p else "")
    return f"hidden size {p['hidden_size']}" + scale + (f", regulariser {regs}" if regs else "")


def _setting_key(c: dict) -> dict:
    recurrent = _recurrent(c)
    c.pop("model", None)
    for k in ("operation", "hidden_size"):
        c["task"].pop(k, None)
    for k in ("regularizers", *(("iterations", "eval_every", "learning_rate") if recurrent else ())):
        c["train"].pop(k, None)
    return c


def describe(c: dict) -> str:
    """One line a reader can take in: data, ranges and scale of a setting."""
    t = c["task"]
    if "train_length" in t:
        lo, hi = t.get("min_train_length", t["train_length"]), t["train_length"]
        if t.get("loss_steps", "last") == "all":
            loss = f"loss on the running target of every step {lo}–{hi}" if lo < hi else f"loss at step {hi}"
        else:
            loss = f"loss on the final target of {lo}–{hi}-step sequences" if lo < hi else f"loss at step {hi}"
        tests = f"{t['test_length']}" + (f" and {_short(t)}" if _short(t) else "")
        parts = [f"recurrent, {t['input_size']} inputs per step", loss,
                 f"train {hi} steps of {range_text(t['interpolation_range'])} → test {tests} steps of "
                 f"{range_text(t['extrapolation_range'])}"]
        scale = training_text(c, 1e-3)
        first = c["train"].get("first_seed", 0)
        scale[0] = f"{c['train']['seeds']} seeds" + (f" ({first}–{first + c['train']['seeds'] - 1})" if first else "")
        per_model = ("evaluated every", "learning rate")  # shown per model
        return ", ".join(parts + _subset_text(t) + [p for p in scale if not p.startswith(per_model)])
    else:
        parts = [f"static, {t['input_size']} inputs", f"train {range_text(t['interpolation_range'])} → test "
                                                       f"{range_text(t['extrapolation_range'])}"]
    return ", ".join(parts + _subset_text(t) + training_text(c, 1e-3))


def _short(t: dict) -> int:
    """The short test length of a recurrent configuration in use (0: none)."""
    short = t.get("short_test_length", 0)
    return short if short < t["test_length"] else 0


def _subset_text(t: dict) -> list[str]:
    parts = []
    if t.get("subsets"):
        parts.append(f"fixed subsets {t['subsets']}")
    elif (t.get("subset_ratio"), t.get("overlap_ratio")) != (0.25, 0.5):
        parts.append(f"subset ratio {t['subset_ratio']:g}, overlap {t['overlap_ratio']:g}")
    if t.get("evaluation_size", 10_000) != 10_000:
        parts.append(f"{t['evaluation_size']:,} evaluation rows")
    return parts


def _columns(runs: list[dict]) -> tuple[list[dict], dict]:
    """Table columns (one per model and hyperparameter combination) and cells {(column label, op): run}."""
    ident = {r["key"]: (r["config"]["model"], json.dumps(_model_params(r["config"]), sort_keys=True)) for r in runs}
    by_model: dict[str, list[str]] = {}
    for model, p in dict.fromkeys(ident.values()):  # first-seen order, no duplicates
        by_model.setdefault(model, []).append(p)
    columns, label_of = [], {}
    for model in sorted(by_model, key=_model_rank):
        for p in by_model[model]:
            label = model if len(by_model[model]) == 1 else f"{model} [{_params_text(json.loads(p))}]"
            columns.append({"label": label, "model": model, "params": json.loads(p)})
            label_of[model, p] = label
    return columns, {(label_of[ident[r["key"]]], r["config"]["task"]["operation"]): r for r in runs}


def _published(config: dict, static: bool) -> tuple[dict, dict] | None:
    """Published (rates, solved-at) for a static setting whose data match Madsen & Johansen's, else None."""
    t = config["task"]
    if not static:
        return None
    if Range.parse(t["interpolation_range"]) != Range.parse("1,2") or \
            Range.parse(t["extrapolation_range"]) != Range.parse("2,6"):
        return None
    if t["input_size"] == 100 and not t.get("subsets") and (t["subset_ratio"], t["overlap_ratio"]) == (0.25, 0.5):
        return PUBLISHED_RATES, PUBLISHED_SOLVED_AT
    if t["input_size"] == 4 and t.get("subsets") and parse_subsets(t["subsets"]) == ((0, 2), (0, 4)):
        return PUBLISHED_4INPUT
    return None


def _figure_success(path: Path, ops: list[str], columns: list[dict], cells: dict, published, title: str) -> bool:
    """Success rates with Wilson 95 % intervals, one group per operation; published rates as open diamonds."""
    fig = new_figure()
    if fig is None:
        return False
    cmap, width = colors("tab10"), 0.8 / max(1, len(columns))
    ax = fig.add_subplot()
    for j, col in enumerate(columns):
        xs, ys, err, pub_x, pub_y = [], [], [[], []], [], []
        for i, op in enumerate(ops):
            x = i - 0.4 + width * (j + 0.5)
            run = cells.get((col["label"], op))
            s = run["summary"] if run else None
            if s and s.get("success_rate") is not None:
                r, (low, high) = 100 * s["success_rate"], s["success_ci"]
                xs.append(x), ys.append(r), err[0].append(r - 100 * low), err[1].append(100 * high - r)
            if run and published and op in published[0].get(col["model"], {}):  # beside ours, not on it
                pub_x.append(x + width / 3), pub_y.append(published[0][col["model"]][op])
        color = cmap(j % 10)
        if xs:
            ax.errorbar(xs, ys, yerr=err, fmt="o", color=color, capsize=3, label=col["label"])
        if pub_x:
            ax.scatter(pub_x, pub_y, marker="D", s=45, facecolors="none", edgecolors=color, linewidths=1.5)
    if published:
        ax.scatter([], [], marker="D", facecolors="none", edgecolors="0.3", label=f"published ({PUBLISHED_SETTING})")
    for i in range(1, len(ops)):
        ax.axvline(i - 0.5, color="0.85", lw=0.8)
    ax.set_xticks(range(len(ops)), [OP_LABELS.get(op, op) for op in ops])
    ax.set_xlim(-0.5, len(ops) - 0.5)
    ax.set_ylim(-5, 105)
    ax.set_ylabel("success rate (%), Wilson 95 % interval")
    ax.set_title(f"Success rates (Madsen & Johansen protocol)\n{title}", fontsize=10)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return True


def _setting(setting: dict, static: bool, name: str, folder: Path) -> list[str]:
    columns, cells = _columns(setting["runs"])
    ops = [op for op in OPERATIONS if any(o == op for _, o in cells)]
    ops += sorted({o for _, o in cells} - set(ops))
    labels = [c["label"] for c in columns]
    lines = [f"### {setting['title']}", ""]
    groups: dict[str, list[str]] = {}
    for c in columns:
        groups.setdefault(_params_text(c["params"]), []).append(c["label"])
    lines += ["Per model: " + "; ".join(f"{', '.join(ms)}: {p}" for p, ms in groups.items()) + ".", ""]

    def cell(label, op, fn):
        run = cells.get((label, op))
        return fn(run["summary"] or {}) if run else "—"

    t = setting["config"]["task"]
    splits = [("interpolation", "normalized_interpolation_error"), ("extrapolation", "normalized_extrapolation_error")]
    if not static:
        splits = [(f"interpolation ({t['train_length']} steps)", splits[0][1]),
                  (f"extrapolation ({t['test_length']} steps)", splits[1][1])]
        if _short(t):
            splits.append((f"extrapolation ({_short(t)} steps)", "normalized_short_extrapolation_error"))
    fmt = score if static else fine_score
    for split, key in splits:
        lines += [f"**Table 1, {split}** (normalised error, median over seeds; 0 perfect, 100 random)", ""]
        lines += table(["operation", *labels], [[OP_LABELS.get(op, op)] + [
            cell(lab, op, lambda s: fmt(s.get(key))) for lab in labels] for op in ops])
    if not static:
        lines += [RECURRENT_CLAIM, ""]

    lines += ["**Success rate** (Madsen & Johansen; Wilson 95 % interval)", ""]
    lines += table(["model", *(OP_LABELS.get(op, op) for op in ops)],
                   [[lab] + [cell(lab, op, rate) for op in ops] for lab in labels])
    published = _published(setting["config"], static)
    pub_rows = [c for c in columns if published and c["model"] in published[0]]
    if pub_rows:
        lines += [f"**Published success rate** (Madsen & Johansen 2020: {PUBLISHED_SETTING}, same data; "
                  f"ours above: {setting['config']['train']['seeds']} seeds × "
                  f"{setting['config']['train']['iterations']:,} iterations)", ""]
        lines += table(["model", *(OP_LABELS.get(op, op) for op in ops)], [
            [f"{c['label']} ({PUBLISHED_LABELS[c['model']]})"]
            + [f"{published[0][c['model']][op]} %" if op in published[0][c['model']] else "—" for op in ops]
            for c in pub_rows])
    elif static:
        lines += ["No published success rates for this setting (they exist for 100 inputs, U[1, 2] → U[2, 6], "
                  "and for the 4-input variant with subsets 0:2,0:4).", ""]

    rows = []
    for c, op in ((c, op) for c in columns for op in ops if (c["label"], op) in cells):
        s, pub = cells[c["label"], op]["summary"] or {}, (published or ({}, {}))[1].get((c["model"], op))
        rows.append([c["label"], OP_LABELS.get(op, op), f"{s.get('successes', 0)} of {s.get('seeds', 0)}",
                     num(s.get("solved_at_median"), ",.0f"), num(pub, ",.0f") if pub else "—",
                     num(s.get("sparsity_error_mean"), ".2e"), str(s.get("diverged", "n/a")),
                     num(s.get("threshold"), ".4g")])
    header = ["model", "operation", "successes", "solved at (median)", "published solved at",
              "sparsity error (mean)", "diverged", "threshold (MSE)"]
    if not published:  # no published column where nothing was published
        header, rows = header[:4] + header[5:], [r[:4] + r[5:] for r in rows]
    lines += ["**Solved at, sparsity error, divergence** (solved at and sparsity over successful seeds)", ""]
    lines += table(header, rows)
    if _figure_success(folder / name, ops, columns, cells, published, setting["title"]):
        lines += [f"![Success rates ({setting['title']})]({name})", ""]
    length_name = name.replace("success_rates", "error_by_length")
    if not static and _figure_lengths(folder / length_name, ops, columns, cells, setting["title"]):
        lines += ["**Error against sequence length** (median normalised error of the best-validation model on "
                  "prefixes of the test sequences; training saw 1–10 steps)", "",
                  f"![Error by length ({setting['title']})]({length_name})", ""]
    return lines


def _figure_lengths(path: Path, ops: list[str], columns: list[dict], cells: dict, title: str) -> bool:
    """Median normalised error against the sequence length, one panel per operation, one line per model."""
    fig = new_figure((4.2 * max(1, len(ops)), 4.2))
    if fig is None:
        return False
    cmap, drawn = colors("tab10"), False
    axes = fig.subplots(1, len(ops), squeeze=False)[0]
    for ax, op in zip(axes, ops):
        for j, col in enumerate(columns):
            run = cells.get((col["label"], op))
            curve = ((run or {}).get("summary") or {}).get("normalized_error_by_length") or {}
            pts = sorted((int(L), v) for L, v in curve.items() if v is not None)
            if not pts:
                continue
            xs, ys = [L for L, _ in pts], [min(max(v, 1e-6), 1e4) for _, v in pts]  # inf (overflow) drawn at the top
            ax.plot(xs, ys, "o-", ms=3, color=cmap(j % 10), label=col["label"])
            drawn = True
        ax.axvspan(1, 10, color="0.92")
        ax.axhline(1e4, color="0.5", ls=":", lw=1)
        ax.text(1.1, 1.4e4, "≥ 10⁴ or overflow (inf)", fontsize=7, color="0.4")
        ax.set_xscale("log"), ax.set_yscale("log")
        ax.set_ylim(1e-6, 1e5)
        ax.set_xlabel("sequence length (steps)")
        ax.set_title(OP_LABELS.get(op, op), fontsize=10)
    axes[0].set_ylabel("normalised error (median; 100 = untrained)")
    if not drawn:
        return False
    axes[-1].legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    wrapped = textwrap.fill(title, 60 * max(1, len(ops)))
    fig.suptitle(f"Error against sequence length (shaded: training lengths)\n{wrapped}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return True


def section(exp, ctx) -> list[str]:
    """The section of ``arithmetic`` or ``arithmetic-recurrent``."""
    static = not exp.recurrent
    heading = "Static arithmetic" if static else "Recurrent arithmetic"
    lines = [f"## {heading}: Table 1 and the Madsen & Johansen success rates", "", SCORES, ""]
    if static:
        lines += [f"Published numbers are Madsen & Johansen's (2020), at {PUBLISHED_SETTING}: compare with the "
                  f"scale of each setting in mind.", ""]
    else:
        lines += [RECURRENT_TASK, ""]
    plain = [r for r in ctx.runs if not r["config"]["task"].get("unit_options")]  # controlled runs: below
    for i, setting in enumerate(settings(plain, _setting_key, describe)):
        lines += _setting(setting, static, figure_name(f"success_rates_{exp.name}", i), ctx.folder)
    return lines + ([] if static else gate_study.section(ctx, ctx.folder))
