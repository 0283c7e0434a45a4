"""Building blocks of the report that every experiment's section uses: Markdown tables, number formats, figures on
matplotlib's Agg canvas (no pyplot, so no global state), and the grouping of runs into *settings*.

A setting is a group of runs that differ only in what a table's rows and columns show (the model, the operation);
each gets its own headed tables, so no table cell ever mixes two configurations.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable

from .ranges import Range


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows), ""]


def num(v, fmt: str = ".1f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return "inf" if math.isinf(v) else format(v, fmt)


def score(v) -> str:
    """A normalised error: one decimal, or scientific notation once it passes 10⁴ (a diverging model)."""
    return num(v, ".1e" if v is not None and math.isfinite(v) and abs(v) >= 1e4 else ".1f")


def rate(s: dict) -> str:
    """A success rate with its Wilson interval, from a summary."""
    if s.get("success_rate") is None:
        return "n/a"
    low, high = s["success_ci"]
    return f"{100 * s['success_rate']:.0f} % [{100 * low:.0f}, {100 * high:.0f}]"


def range_text(text: str) -> str:
    return " ∪ ".join(f"U[{lo:g}, {hi:g}]" for lo, hi in Range.parse(text).intervals)


def median(values) -> float | None:
    vals = sorted(v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v)))
    if not vals:
        return None
    mid = len(vals) // 2
    return vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2


def training_text(c: dict, default_lr: float, default_batch: int = 128, default_eval: int = 1000) -> list[str]:
    """The scale of a configuration's training, in words: seeds × iterations, and what differs from the defaults."""
    tr = c["train"]
    first = tr.get("first_seed", 0)
    seeds = f"{tr['seeds']} seeds" if not first else f"{tr['seeds']} seeds ({first}–{first + tr['seeds'] - 1})"
    parts = [f"{seeds} × {tr['iterations']:,} iterations"]
    if tr.get("learning_rate") != default_lr:
        parts.append(f"learning rate {tr['learning_rate']:g}")
    if tr.get("batch_size", default_batch) != default_batch:
        parts.append(f"batch {tr['batch_size']}")
    if tr.get("eval_every", default_eval) != default_eval:
        parts.append(f"evaluated every {tr['eval_every']:,}")
    if tr.get("optimizer", "adam") != "adam":
        parts.append(tr["optimizer"])
    if tr.get("grad_clip") is not None:
        parts.append(f"gradient clipped per seed at {tr['grad_clip']:g}")
    if tr.get("lr_decay") is not None:
        parts.append(f"cosine learning-rate decay from {100 * tr['lr_decay']:g} % of the iterations")
    return parts


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": json.dumps(v)})
    return out


def settings(runs: list[dict], key: Callable[[dict], dict], describe: Callable[[dict], str]) -> list[dict]:
    """Group runs by setting, largest seeds × iterations first; each {"key", "title", "config", "runs"}.

    ``key(config)`` is the configuration without what varies inside a setting; ``describe(config)`` a title. Two
    settings whose titles read the same get the options that tell them apart appended.
    """
    groups: dict[str, list[dict]] = {}
    for r in runs:
        groups.setdefault(json.dumps(key(json.loads(json.dumps(r["config"]))), sort_keys=True), []).append(r)
    out = [{"key": k, "config": rs[0]["config"], "runs": rs, "title": describe(rs[0]["config"])}
           for k, rs in groups.items()]
    for s in out:
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


def new_figure(figsize=(9, 5)):
    """A new Figure on the Agg canvas, or None when matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def colors(name: str = "tab10"):
    from matplotlib import colormaps

    return colormaps[name]


def figure_name(stem: str, index: int) -> str:
    return f"{stem}.png" if index == 0 else f"{stem}_{index + 1}.png"


def best_runs(runs: list[dict], key: Callable[[dict], object]) -> dict:
    """For each key(run), the run with the most seeds × iterations (the strongest evidence we have)."""
    out: dict = {}
    for r in runs:
        k = key(r)
        tr = r["config"]["train"]
        if k not in out or tr["seeds"] * tr["iterations"] > (lambda t: t["seeds"] * t["iterations"])(
                out[k]["config"]["train"]):
            out[k] = r
    return out


def seed_median(store, run: dict | None, metric: str) -> float | None:
    """The median over a run's seeds of a per-seed value (at each seed's best step); None without one."""
    return None if run is None else median(row.get(metric) for row in store.seeds(run["key"]))
