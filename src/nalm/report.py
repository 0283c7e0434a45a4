"""The Markdown report of a results store (``nalm report``): Figure 1, Table 1, success rates and their figures.

Reads only the store (:class:`nalm.store.Store`), never logs. Runs are grouped by their *setting*: the resolved
configuration without the model, the operation and the per-model hyperparameters (hidden size, and the regularisers
of the units the model contains). Each setting gets its own headed tables. Per-model hyperparameters are listed under
the setting's heading; a model that appears with several of them in one setting gets one column per combination, so
no table cell ever mixes two configurations.

matplotlib is optional (``pip install 'nalm[report]'``): without it the tables are written and the figures skipped.
Figures are drawn on the Agg canvas without pyplot, so no global pyplot state is touched and nothing stays open.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from . import __version__
from .errors import DataError
from .experiments import PROTOCOL
from .ranges import Range
from .store import Store
from .tasks.arithmetic import parse_subsets
from .tasks.identity import FIGURE1_ACTIVATIONS

__all__ = ["write_report"]

OPERATIONS = ("add", "sub", "mul", "div", "squared", "root")
OP_LABELS = {"add": "a + b", "sub": "a − b", "mul": "a × b", "div": "a / b", "squared": "a²", "root": "√a"}
MODEL_ORDER = ("nau-nmu", "nau-nau", "nac-nac_mul", "nac-nac", "nalu-nalu", "inalu-inalu", "npu-npu", "linear",
               "relu", "relu6", "lstm", "gru", "rnn-tanh", "rnn-relu")
SECTIONS = (("arithmetic", "Static arithmetic"), ("arithmetic-recurrent", "Recurrent arithmetic"))

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


# -- formatting ---------------------------------------------------------------------------------------------------
def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows), ""]


def _num(v, fmt: str = ".1f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return "inf" if math.isinf(v) else format(v, fmt)


def _score(v) -> str:
    """A normalised error: one decimal, or scientific notation once it passes 10⁴ (a diverging model)."""
    return _num(v, ".1e" if v is not None and math.isfinite(v) and abs(v) >= 1e4 else ".1f")


def _rate(s: dict) -> str:
    if s.get("success_rate") is None:
        return "n/a"
    low, high = s["success_ci"]
    return f"{100 * s['success_rate']:.0f} % [{100 * low:.0f}, {100 * high:.0f}]"


def _range(text: str) -> str:
    return " ∪ ".join(f"U[{lo:g}, {hi:g}]" for lo, hi in Range.parse(text).intervals)


def _model_rank(model: str) -> tuple:
    return (MODEL_ORDER.index(model), "") if model in MODEL_ORDER else (len(MODEL_ORDER), model)


# -- settings -----------------------------------------------------------------------------------------------------
def _model_params(config: dict) -> dict:
    """Per-model hyperparameters: the hidden size and the regularisers of the units the model contains."""
    units = set(config["model"].split("-"))
    regs = {k: v for k, v in sorted(config["train"].get("regularizers", {}).items()) if k in units}
    return {"hidden_size": config.get("hidden_size"), "regularizers": regs}


def _params_text(p: dict) -> str:
    regs = ", ".join(f"{u} λ̂ = {r['scale']:g} ramped over steps {r['start']:,}–{r['end']:,}"
                     for u, r in p["regularizers"].items())
    return f"hidden size {p['hidden_size']}" + (f", regulariser {regs}" if regs else "")


def _setting_key(config: dict) -> str:
    c = json.loads(json.dumps(config))
    for k in ("model", "hidden_size"):
        c.pop(k, None)
    c["task"].pop("operation", None)
    c["train"].pop("regularizers", None)
    return json.dumps(c, sort_keys=True)


def _describe(c: dict) -> str:
    """One line a reader can take in: data, ranges and scale of a setting."""
    t, tr, exp = c["task"], c["train"], c["experiment"]
    if exp == "identity":
        layers = " → ".join(str(n) for n in (1, *t.get("hidden_layers", ()), 1))
        parts = [f"identity MLP {layers}", f"train {_range(t['interpolation_range'])} → test "
                                           f"{_range(t['extrapolation_range'])}"]
    elif exp == "arithmetic":
        parts = [f"static, {t['input_size']} inputs", f"train {_range(t['interpolation_range'])} → test "
                                                       f"{_range(t['extrapolation_range'])}"]
    else:
        parts = [f"recurrent, {t['input_size']} inputs per step",
                 f"train {t['train_length']} steps of {_range(t['interpolation_range'])} → test "
                 f"{t['test_length']} steps of {_range(t['extrapolation_range'])}"]
    if exp != "identity":
        if t.get("subsets"):
            parts.append(f"fixed subsets {t['subsets']}")
        elif (t.get("subset_ratio"), t.get("overlap_ratio")) != (0.25, 0.5):
            parts.append(f"subset ratio {t['subset_ratio']:g}, overlap {t['overlap_ratio']:g}")
        if t.get("evaluation_size", 10_000) != 10_000:
            parts.append(f"{t['evaluation_size']:,} evaluation rows")
    first = tr.get("first_seed", 0)
    seeds = f"{tr['seeds']} seeds" if not first else f"{tr['seeds']} seeds ({first}–{first + tr['seeds'] - 1})"
    parts.append(f"{seeds} × {tr['iterations']:,} iterations")
    if tr.get("learning_rate") != (1e-2 if exp == "identity" else 1e-3):
        parts.append(f"learning rate {tr['learning_rate']:g}")
    if tr.get("batch_size", 128) != 128:
        parts.append(f"batch {tr['batch_size']}")
    if tr.get("eval_every", 1000) != 1000:
        parts.append(f"evaluated every {tr['eval_every']:,}")
    if c.get("protocol") != PROTOCOL:
        parts.append(f"protocol {c.get('protocol')} (older code)")
    return ", ".join(parts)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": json.dumps(v)})
    return out


def _settings(runs: list[dict]) -> list[dict]:
    """Group runs by setting, largest seeds × iterations first; each {"title", "config", "runs"}."""
    groups: dict[str, list[dict]] = {}
    for r in runs:
        groups.setdefault(_setting_key(r["config"]), []).append(r)
    out = [{"key": k, "config": rs[0]["config"], "runs": rs, "title": _describe(rs[0]["config"])}
           for k, rs in groups.items()]
    for s in out:  # two settings that read the same: name what differs
        twins = [t for t in out if t["title"] == s["title"]]
        if len(twins) > 1:
            flats = [_flat(json.loads(t["key"])) for t in twins]
            mine = _flat(json.loads(s["key"]))
            s["suffix"] = ", ".join(f"{k} = {v}" for k, v in sorted(mine.items())
                                    if any(f.get(k) != v for f in flats))
    for s in out:
        s["title"] += f" ({s.pop('suffix')})" if "suffix" in s else ""
    return sorted(out, key=lambda s: (-s["config"]["train"]["seeds"] * s["config"]["train"]["iterations"],
                                      s["title"]))


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


def _published(config: dict) -> tuple[dict, dict] | None:
    """Published (rates, solved-at) for a static setting whose data match Madsen & Johansen's, else None."""
    t = config["task"]
    if config["experiment"] != "arithmetic":
        return None
    if Range.parse(t["interpolation_range"]) != Range.parse("1,2") or \
            Range.parse(t["extrapolation_range"]) != Range.parse("2,6"):
        return None
    if t["input_size"] == 100 and not t.get("subsets") and (t["subset_ratio"], t["overlap_ratio"]) == (0.25, 0.5):
        return PUBLISHED_RATES, PUBLISHED_SOLVED_AT
    if t["input_size"] == 4 and t.get("subsets") and parse_subsets(t["subsets"]) == ((0, 2), (0, 4)):
        return PUBLISHED_4INPUT
    return None


# -- figures ------------------------------------------------------------------------------------------------------
def _figure():
    """(a new Figure on the Agg canvas, matplotlib's colormaps), or None when matplotlib is not installed."""
    try:
        from matplotlib import colormaps
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(9, 5))
    FigureCanvasAgg(fig)
    return fig, colormaps


def _figure_identity(path: Path, curves: list[tuple[str, dict]], title: str) -> bool:
    """Figure 1: mean absolute error against the input, one line per activation, the training range shaded."""
    import numpy as np

    made = _figure()
    if made is None:
        return False
    fig, cmap = made[0], made[1]["tab20"]
    ax = fig.add_subplot()
    lo, hi = curves[0][1]["train_range"]
    ax.axvspan(lo, hi, color="0.88", label="training range")
    for i, (label, curve) in enumerate(curves):
        y = np.asarray(curve["mae"], dtype=float)
        if np.isfinite(y).any():
            ax.plot(curve["x"], np.clip(y, 1e-6, None), color=cmap(i % 20), lw=1.4,
                    label=f"{label} ({curve['models']} models)")
    ax.set_yscale("log")
    ax.set_xlabel("input x")
    ax.set_ylabel("mean absolute error |f(x) − x|")
    ax.set_title(f"Figure 1: MLPs learning the identity\n{title}", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return True


def _figure_success(path: Path, ops: list[str], columns: list[dict], cells: dict, published, title: str) -> bool:
    """Success rates with Wilson 95 % intervals, one group per operation; published rates as open diamonds."""
    made = _figure()
    if made is None:
        return False
    fig, cmap, width = made[0], made[1]["tab10"], 0.8 / max(1, len(columns))
    ax = fig.add_subplot()
    for j, col in enumerate(columns):
        xs, ys, err, pub_x, pub_y = [], [], [[], []], [], []
        for i, op in enumerate(ops):
            x = i - 0.4 + width * (j + 0.5)
            run = cells.get((col["label"], op))
            s = run["summary"] if run else None
            if s and s.get("success_rate") is not None:
                rate, (low, high) = 100 * s["success_rate"], s["success_ci"]
                xs.append(x), ys.append(rate), err[0].append(rate - 100 * low), err[1].append(100 * high - rate)
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


def _figure_name(stem: str, index: int) -> str:
    return f"{stem}.png" if index == 0 else f"{stem}_{index + 1}.png"


# -- sections -----------------------------------------------------------------------------------------------------
def _identity_section(store: Store, runs: list[dict], folder: Path) -> list[str]:
    lines = ["## Figure 1: MLPs fail to extrapolate the identity", ""]
    order = {a: i for i, a in enumerate(FIGURE1_ACTIVATIONS)}
    for k, setting in enumerate(_settings(runs)):
        lines += [f"### {setting['title']}", ""]
        rows, curves = [], []
        for r in sorted(setting["runs"], key=lambda r: (order.get(r["config"]["model"], len(order)),
                                                     r["config"]["model"])):
            s, curve = r["summary"] or {}, store.artifact(r["key"], "error_curve")
            if curve:
                curves.append((r["config"]["model"], curve))
            models = f"{curve['models']} of {s.get('seeds', '?')}" if curve else str(s.get("seeds", "?"))
            rows.append([r["config"]["model"], models, _num(s.get("mae_inside"), ".3g"),
                         _num(s.get("mae_outside"), ".3g")])
        name = _figure_name("figure1_identity", k)
        if curves and _figure_identity(folder / name, curves, setting["title"]):
            lines += [f"![Figure 1: mean absolute error against the input ({setting['title']})]({name})", ""]
        lines += _table(["activation", "models", "MAE inside training range", "MAE outside"], rows)
    return lines


def _arithmetic_setting(setting: dict, index: int, folder: Path) -> list[str]:
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

    for split in ("interpolation", "extrapolation"):
        lines += [f"**Table 1, {split}** (normalised error, median over seeds; 0 perfect, 100 random)", ""]
        lines += _table(["operation", *labels], [[OP_LABELS.get(op, op)] + [
            cell(lab, op, lambda s: _score(s.get(f"normalized_{split}_error"))) for lab in labels] for op in ops])

    lines += ["**Success rate** (Madsen & Johansen; Wilson 95 % interval)", ""]
    lines += _table(["model", *(OP_LABELS.get(op, op) for op in ops)],
                    [[lab] + [cell(lab, op, _rate) for op in ops] for lab in labels])
    published = _published(setting["config"])
    pub_rows = [c for c in columns if published and c["model"] in published[0]]
    if pub_rows:
        lines += [f"**Published success rate** (Madsen & Johansen 2020: {PUBLISHED_SETTING}, same data; "
                  f"ours above: {setting['config']['train']['seeds']} seeds × "
                  f"{setting['config']['train']['iterations']:,} iterations)", ""]
        lines += _table(["model", *(OP_LABELS.get(op, op) for op in ops)], [
            [f"{c['label']} ({PUBLISHED_LABELS[c['model']]})"]
            + [f"{published[0][c['model']][op]} %" if op in published[0][c['model']] else "—" for op in ops]
            for c in pub_rows])
    elif setting["config"]["experiment"] == "arithmetic":
        lines += ["No published success rates for this setting (they exist for 100 inputs, U[1, 2] → U[2, 6], "
                  "and for the 4-input variant with subsets 0:2,0:4).", ""]

    rows = []
    for c, op in ((c, op) for c in columns for op in ops if (c["label"], op) in cells):
        s, pub = cells[c["label"], op]["summary"] or {}, (published or ({}, {}))[1].get((c["model"], op))
        rows.append([c["label"], OP_LABELS.get(op, op), f"{s.get('successes', 0)} of {s.get('seeds', 0)}",
                     _num(s.get("solved_at_median"), ",.0f"), _num(pub, ",.0f") if pub else "—",
                     _num(s.get("sparsity_error_mean"), ".2e"), str(s.get("diverged", "n/a")),
                     _num(s.get("threshold"), ".4g")])
    header = ["model", "operation", "successes", "solved at (median)", "published solved at",
              "sparsity error (mean)", "diverged", "threshold (MSE)"]
    if not published:  # no published column where nothing was published
        header, rows = header[:4] + header[5:], [r[:4] + r[5:] for r in rows]
    lines += ["**Solved at, sparsity error, divergence** (solved at and sparsity over successful seeds)", ""]
    lines += _table(header, rows)
    name = _figure_name("success_rates", index)
    if _figure_success(folder / name, ops, columns, cells, published, setting["title"]):
        lines += [f"![Success rates ({setting['title']})]({name})", ""]
    return lines


def _in_progress(store: Store, running: list[dict]) -> list[str]:
    lines = ["## In progress", "", "Unfinished runs (the same command resumes them from their last checkpoint):", ""]
    for r in running:
        step = store.checkpoint_step(r["key"])
        its = r["config"]["train"]["iterations"]
        done = f"checkpointed at step {step:,} of {its:,}" if step is not None else f"not started (of {its:,} steps)"
        lines.append(f"- `{r['name']}` ({_describe(r['config'])}): {done}")
    return lines + [""]


def write_report(store_path: str | Path, out_path: str | Path) -> Path:
    """Write the Markdown report of the store at ``store_path`` to ``out_path``, figures beside it; return its path.

    Raises DataError when the store does not exist (it is never created here).
    """
    store_path, out = Path(store_path), Path(out_path)
    if not store_path.is_file():
        raise DataError(f"results store {store_path} not found; make results first, e.g. "
                        f"`nalm reproduce --profile quick --store {store_path}`")
    out.parent.mkdir(parents=True, exist_ok=True)
    with Store(store_path, readonly=True) as store:
        done, running = store.runs(), store.runs(status="running")
        lines = ["# nalm results", "",
                 f"Store `{store_path}`: {len(done)} finished run(s), {len(running)} in progress; "
                 f"nalm {__version__}.", "", SCORES, ""]
        if not done:
            lines += ["**No results yet.** Make them with `nalm reproduce --profile quick` (about 15 minutes on "
                      "2 cores), then run `nalm report` again.", ""]
        else:
            if _figure() is None:
                lines += ["*matplotlib is not installed, so the figures were skipped: "
                          "`pip install 'nalm[report]'` adds it.*", ""]
            identity = [r for r in done if r["experiment"] == "identity"]
            if identity:
                lines += _identity_section(store, identity, out.parent)
            index = 0
            for experiment, heading in SECTIONS:
                settings = _settings([r for r in done if r["experiment"] == experiment])
                if not settings:
                    continue
                lines += [f"## {heading}: Table 1 and the Madsen & Johansen success rates", ""]
                if experiment == "arithmetic":
                    lines += [f"Published numbers are Madsen & Johansen's (2020), at {PUBLISHED_SETTING}: "
                              "compare with the scale of each setting in mind.", ""]
                for setting in settings:
                    lines += _arithmetic_setting(setting, index, out.parent)
                    index += 1
            other = sorted({r["experiment"] for r in done} - {"identity", *(e for e, _ in SECTIONS)})
            if other:
                lines += [f"Not reported here: runs of {', '.join(other)}.", ""]
        if running:
            lines += _in_progress(store, running)
    out.write_text("\n".join(lines), encoding="utf-8")
    return out
