"""The report section and the claims of ``mnist-count`` and ``mnist-sum`` (Table 2 of Trask et al. 2018): per
setting, the digit accuracy at length 1, the MAE and exact share at every test length beside the length-aware mean
predictor, the recurrent weight of a unit cell, and a figure of the MAE against the sequence length."""

from __future__ import annotations

import math


from nalm.engine.experiment import NOT_REPRODUCED, NOT_RUN, REPRODUCED, Claim, Verdict
from nalm.engine.reporting import best_runs, colors, figure_name, new_figure, num, settings, table, training_text
from nalm.nn.models import RECURRENT_BASELINES

from .counting_why import (figure as why_figure, lengths as _lengths, literal, nac_why, nalu_why, relative_mae,
                           relu_why, supervision_why)

#: Table 2's rows: the paper's six, then the NAU.
PAPER_MODELS = ("lstm", "gru", "rnn-tanh", "rnn-relu", "nac", "nalu")
MODELS = PAPER_MODELS + ("nau",)

LABELS = {"lstm": "LSTM", "gru": "GRU", "rnn-tanh": "RNN-tanh", "rnn-relu": "RNN-ReLU", "nac": "NAC", "nalu": "NALU",
          "nau": "NAU"}
TASKS = {"mnist-count": "counting", "mnist-sum": "addition"}
#: Per-row options: what may differ between the rows of one table (the rest of a configuration is its setting).
ROW_TASK = ("recurrent_init", "core_learning_rate", "hidden_size", "digit_head", "unit_options")
ROW_TRAIN = ("regularizers",)
#: The cause of a failing row, from the controlled runs (:mod:`.counting_why`).
WHYS = {"nac": nac_why, "nalu": nalu_why}


def _fits(s):
    name = "test10" if "test10_mae" in s else "validation"
    mae, base = s[f"{name}_mae"], s["baseline_mae"][name]
    return mae < 0.25 * base, f"MAE {num(mae, '.3g')} at length 10 (mean predictor {num(base, '.3g')})"


def _long(s, ok):
    long = [L for L in _lengths(s) if L >= 100]
    return (bool(long) and all(ok(relative_mae(s, L)) for L in long),
            ", ".join(f"MAE {num(s[f'test{L}_mae'], '.4g')} at {L} ({num(100 * relative_mae(s, L), '.0f')} % of the "
                      f"mean target)" for L in long) or "no test length >= 100")


def _fails_short(s):
    acc = s.get("test1_digit_accuracy")
    return acc is not None and acc < 0.9, f"per-digit accuracy {num(100 * (acc or math.nan), '.1f')} %"


def _check(models: tuple[str, ...], test, whys: dict | None = None):
    """A claim check over the strongest run (most seeds × iterations) of each of ``models``; ``whys``: model -> the
    function that gives its cause from the controlled runs (:mod:`.counting_why`) when that model fails."""

    def check(ctx) -> Verdict:
        best = best_runs(literal(ctx.runs), lambda r: r["config"]["model"])
        found, bad = [], []
        for m in (m for m in models if m in best):
            ok, text = test(best[m]["summary"] or {})
            found.append(f"{LABELS[m]}: {text}")
            bad += [] if ok else [m]
        if not found:
            return Verdict(NOT_RUN, f"no finished run of {', '.join(LABELS[m] for m in models)}")
        missing = [LABELS[m] for m in models if m not in best]
        text = "; ".join(found) + (f" (not run: {', '.join(missing)})" if missing else "") + " (medians over seeds)"
        causes = {}  # why function -> the failing models it explains
        for m in bad:
            if m in (whys or {}):
                causes.setdefault(whys[m], []).append(LABELS[m])
        why = " ".join(f"{', '.join(ms)}: {w}" for f, ms in causes.items() for w in [f(ctx)] if w)
        return Verdict(NOT_REPRODUCED if bad else REPRODUCED, text, why if bad else "")

    return check


def claims(target: str) -> tuple[Claim, ...]:
    what = "the count of each digit class" if target == "count" else "the sum of the digits"
    return (
        Claim(f"All six models learn {what} at the training length 10 (MAE at length 10 below a quarter of the "
              f"length-aware mean predictor's).", _check(PAPER_MODELS, _fits, {"nalu": nalu_why})),
        Claim("LSTM, GRU, RNN-tanh and RNN-ReLU fail at lengths 100 and 1000 (MAE above half the mean target).",
              _check(RECURRENT_BASELINES, lambda s: _long(s, lambda r: r > 0.5), {"rnn-relu": relu_why})),
        Claim("RNN-tanh and RNN-ReLU fail at length 1 too (per-digit accuracy below 90 %).",
              _check(("rnn-tanh", "rnn-relu"), _fails_short, dict.fromkeys(("rnn-tanh", "rnn-relu"), supervision_why))),
        Claim("NAC and NALU extrapolate to lengths 100 and 1000 (MAE below 10 % of the mean target).",
              _check(("nac", "nalu"), lambda s: _long(s, lambda r: r < 0.1), WHYS)),
    )


def _key(c: dict) -> dict:
    """A configuration without what varies between the rows of one table."""
    for k in ("model", "experiment"):
        c.pop(k, None)
    for k in ROW_TASK:
        c["task"].pop(k, None)
    for k in ROW_TRAIN:
        c["train"].pop(k, None)
    return c


def _design(t: dict) -> list[str]:
    """A unit row's initialisation and digit head, where not the defaults."""
    return ([f"{t['recurrent_init']} init"] if t.get("recurrent_init", "unit") != "unit" else []) + (
        [f"{t['digit_head']} head"] if t.get("digit_head", "linear") != "linear" else [])


def _row(c: dict) -> tuple[tuple, str]:
    """A run's row: its sort key and its label (the model, and the row options that differ from the defaults)."""
    t, m = c["task"], c["model"]
    parts = [f"hidden {t['hidden_size']}"] if m in RECURRENT_BASELINES and t["hidden_size"] != 32 else []
    parts += _design(t)
    parts += [f"core lr {t['core_learning_rate']:g}"] if t["core_learning_rate"] != 1e-2 else []
    parts += [f"unit options {t['unit_options']}"] if t.get("unit_options") else []
    parts += [f"{u} λ {r['scale']:g} over steps {r['start']:,}–{r['end']:,}" for u, r in
              sorted(c["train"].get("regularizers", {}).items()) if u == m]
    rank = MODELS.index(m) if m in MODELS else len(MODELS)
    return (rank, m, tuple(parts)), LABELS.get(m, m) + (f" ({', '.join(parts)})" if parts else "")


def _describe(c: dict) -> str:
    t = c["task"]
    parts = [f"{t['digit_net']} conv net", f"train length {t['train_length']}",
             "loss on every step" if t["loss_steps"] == "all" else "loss on the final output",
             f"{t['test_sequences']:,} test sequences per length"] + ([f"{t['data']} data"] if t["data"] != "mnist"
                                                                     else [])
    return ", ".join(parts + training_text(c, 1e-3, default_batch=32, default_eval=500))


def _cell(s: dict, name: str, fmt: str = ".3g", scale: float = 1.0) -> str:
    v, r = s.get(name), s.get(f"{name}_range")
    if v is None:
        return "n/a"
    text = num(scale * v, fmt)
    return text + (f" [{num(scale * r[0], fmt)}–{num(scale * r[1], fmt)}]" if r and r[0] != r[1] else "")


def _figure(path, runs: list[dict], title: str) -> bool:
    """MAE against sequence length, log-log: one line per row (median over seeds, min–max shaded)."""
    fig = new_figure((7, 4.5))
    if fig is None:
        return False
    ax, cmap = fig.add_subplot(), colors("tab10")
    for i, r in enumerate(runs):
        s, xs = r["summary"] or {}, _lengths(r["summary"] or {})
        ax.plot(xs, [s[f"test{L}_mae"] for L in xs], "o-", color=cmap(i % 10), label=_row(r["config"])[1])
        lo, hi = ([min(s[f"test{L}_mae_range"][j], 1e12) for L in xs] for j in (0, 1))
        ax.fill_between(xs, lo, hi, color=cmap(i % 10), alpha=0.15, lw=0)
    s, xs = runs[0]["summary"] or {}, _lengths(runs[0]["summary"] or {})
    ax.plot(xs, [s["baseline_mae"][f"test{L}"] for L in xs], "k--", lw=1, label="mean predictor (no image)")
    ax.set_xscale("log"), ax.set_yscale("log")
    ax.set_xlabel("sequence length"), ax.set_ylabel("mean absolute error (median over seeds)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return True


def _combined(ctx) -> list[str]:
    """Table 2 in the paper's layout (both tasks side by side, medians) for each setting run on both tasks."""
    lines = []
    def pair(c):  # the two tasks' grids differ in the conv net's learning rate only
        c = _key(c)
        c["train"].pop("learning_rate")
        return c

    for setting in settings(ctx.store.runs("mnist-count") + ctx.store.runs("mnist-sum"), pair, _describe):
        rows: dict = {}  # one row per model (its options per task: in the sections below)
        for r in setting["runs"]:
            m = r["config"]["model"]
            extra = _design(r["config"]["task"])
            label = LABELS.get(m, m) + (f" ({', '.join(extra)})" if extra else "")
            rows.setdefault((_row(r["config"])[0][:2], label), {})[r["experiment"]] = r["summary"] or {}
        if {e for cells in rows.values() for e in cells} != set(TASKS):
            continue
        header = ["model"] + [f"{TASKS[e]}: {h}" for e in TASKS for h in ("accuracy, length 1", "MAE 10", "MAE 100",
                                                                              "MAE 1000")]
        body = [[label] + [v for e in TASKS for v in (
            num(100 * cells[e]["test1_digit_accuracy"], ".1f") + " %" if "test1_digit_accuracy" in cells.get(e, {})
            else "n/a", *(num(cells.get(e, {}).get(f"test{L}_mae"), ".3g") for L in (10, 100, 1000)))]
            for (_, label), cells in sorted(rows.items(), key=lambda kv: kv[0][0])]
        lines += [f"Table 2 as in the paper (medians over seeds; {setting['title']}; the conv net's learning rate as "
                  f"in each task's section):", "", *table(header, body)]
    return lines


def _acceptance(exp, runs: list[dict]) -> list[str]:
    """Issue 9's acceptance targets, on the strongest NAU and LSTM runs of a setting."""
    best = best_runs(runs, lambda r: r["config"]["model"])
    nau, lstm = (best[m]["summary"] if m in best else None for m in ("nau", "lstm"))
    if nau is None or "test1000_mae" not in nau:
        return []
    mae, acc = nau["test1000_mae"], nau.get("test1_digit_accuracy") or 0.0
    mark = {True: "met", False: "**not met**"}
    if exp.name == "mnist-count":
        out = [f"NAU median MAE per class at length 1000 < 5: {num(mae, '.3g')} ({mark[mae < 5]})"]
    else:
        out = [f"NAU median MAE at length 1000 < 100: {num(mae, '.4g')} ({mark[mae < 100]})",
               f"NAU per-digit accuracy at length 1 ≥ 95 %: {num(100 * acc, '.1f')} % ({mark[acc >= 0.95]})"]
        if lstm is not None and "test1000_mae" in lstm:
            ratio = lstm["test1000_mae"] / max(mae, 1e-12)
            out.append(f"LSTM MAE at length 1000 > 10 × the NAU's: {num(ratio, '.3g')} × ({mark[ratio > 10]})")
    return ["Issue 9's acceptance targets (set for `--profile acceptance`): " + "; ".join(out) + ".", ""]


def section(exp, ctx) -> list[str]:
    task = TASKS[exp.name]
    lines = [f"## Table 2, MNIST digit {task} ({exp.name})", "",
             "A conv net per image feeds a recurrent core; trained on sequences of 10 MNIST-train digits with the "
             "squared error on the running target (no digit label, though step 1's target is the first digit's "
             "value), tested on MNIST-test sequences of 1 to 1000 digits. *Accuracy, length 1*: the rounded sum "
             "(or the argmax of the counts) against the digit's label. *MAE*: mean absolute error of the final "
             f"output{' per class' if task == 'counting' else ''}; *exact*: share of sequences whose rounded output "
             "is all right. Cells: median over seeds [min–max], each seed at its best validation step. *Mean "
             "predictor*: L × the mean target per image, looking at no image. *Recurrent weight*: mean diagonal of "
             "a unit cell's recurrent weight at the end of training (exactly 1 accumulates). The paper claims all "
             "models fit length 10 and only NAC and NALU extrapolate to 100 and 1000; we found no numbers of its "
             "Table 2 we could verify, so none are shown beside ours.", ""]
    if exp.name == "mnist-count":
        lines += _combined(ctx)
    for k, setting in enumerate(settings(ctx.runs, _key, _describe)):
        runs = sorted(setting["runs"], key=lambda r: _row(r["config"])[0])
        lengths = [L for L in _lengths(runs[0]["summary"] or {}) if L > 1]
        header = (["model", "seeds", "accuracy, length 1 (%)"] + [f"MAE {L:,}" for L in lengths]
                  + [f"exact {L:,} (%)" for L in lengths] + ["recurrent weight"])
        rows = [[_row(r["config"])[1], str(s.get("seeds")) + (f" ({s['diverged']} diverged)" if s.get("diverged")
                                                              else ""), _cell(s, "test1_digit_accuracy", ".1f", 100)]
                + [_cell(s, f"test{L}_mae") for L in lengths] + [_cell(s, f"test{L}_exact", ".0f", 100)
                                                                  for L in lengths]
                + [_cell(s, "recurrent_weight", ".4f")] for r in runs for s in [r["summary"] or {}]]
        base = (runs[0]["summary"] or {}).get("baseline_mae", {})
        rows.append(["mean predictor", "–", "–"] + [num(base.get(f"test{L}"), ".3g") for L in lengths]
                    + ["–"] * (len(lengths) + 1))
        lines += [f"### {setting['title']}", "", *table(header, rows), *_acceptance(exp, runs)]
        name = figure_name(f"table2_{exp.name.replace('-', '_')}", k)
        if _figure(ctx.folder / name, runs, f"MNIST digit {task}: MAE against sequence length\n{setting['title']}"):
            lines += [f"![MNIST digit {task}: MAE against sequence length ({setting['title']})]({name})", ""]
    return lines + _controlled(exp, ctx)


def _controlled(exp, ctx) -> list[str]:
    """The controlled runs behind the NAC's and the NALU's *why* (:mod:`.counting_why`), with the NAC's figure."""
    whys = [f"- **{LABELS[m]}.** {w}" for m, f in WHYS.items() for w in [f(ctx)] if w]
    if not whys:
        return []
    lines = ["### Controlled runs: why the NAC and NALU cells fail", "", *whys, ""]
    name = f"nac_recurrent_weight_{exp.name.replace('-', '_')}.png"
    if why_figure(ctx, ctx.folder / name):
        lines += [f"![The NAC cell's MAE at the longest length against 1 − w]({name})", ""]
    return lines
