"""The report section of ``single-module``: per operation, success rates (unit × range, Wilson 95 % intervals) with
solved-at and sparsity error beside them, in the layout of the Primer's Figures 14–17; a table of the same numbers;
the claims of the papers that define the units."""

from __future__ import annotations

from pathlib import Path

from nalm.engine.experiment import NOT_REPRODUCED, NOT_RUN, REPRODUCED, Claim, Verdict
from nalm.engine.reporting import best_runs, colors, new_figure, num, rate, table

from .task import OPERATIONS, RANGES, range_label

POSITIVE_RANGES = (5, 6, 7, 8)
#: Published success rates per range (0–8) on this benchmark's set-up (25 seeds, 50,000 steps, the ramp over
#: 20,000–35,000): read from the vector plots of B. Mistry, "MCFC findings" (2023, notes/MCFC_findings.pdf in the
#: Primer's code, github.com/bmistry4/nalm-benchmark; the recovered Wilson intervals match k / 25 exactly). The
#: Primer's own Figures 14–17 were not retrievable as numbers.
PUBLISHED_SOURCE = "Mistry, MCFC findings (2023), Figures 1–2"
PUBLISHED_RANGES = {("nau", "add"): (1.0,) * 9, ("mcfc", "add"): (1.0,) * 9,
                    ("nmu", "mul"): (1.0, 0.8, 0.68, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)}
#: The division paper (Mistry et al. 2022, input redundancy, size 10): mean success over the ranges; its RealNPU
#: figure is the original unit's (ours), 15.1 points below its modified RealNPU's 85.3 %. Its runs: 100,000 steps,
#: the NMRU at learning rate 10⁻² with gradient-norm clipping 1 (this benchmark: 50,000 steps at 10⁻³).
PUBLISHED_REDUNDANCY = {"nmru": 0.916, "realnpu": 0.853 - 0.151}


def _key(run: dict) -> tuple:
    t = run["config"]["task"]
    return run["config"]["model"], t["operation"], t["input_size"]


def strongest(runs: list[dict]) -> dict:
    """(model, operation, input size) -> the finished run with the most seeds × iterations."""
    return best_runs([r for r in runs if r.get("summary")], _key)


def _solves(model: str, ops: tuple[str, ...], ranges: tuple[int, ...] | None, words: str):
    """At least 90 % of the seeds succeed on each of ``ranges`` (None: all nine) in the strongest run of ``model``
    on each of ``ops`` (input size 2)."""

    def check(ctx) -> Verdict:
        best, found, bad = strongest(ctx.runs), [], []
        for op in ops:
            run = best.get((model, op, 2))
            for s in run["summary"]["ranges"] if run else ():
                if ranges is None or s["range"] in ranges:
                    found.append(f"{OPERATIONS[op][1]} {range_label(s['range'])}: {rate(s)}")
                    if (s["success_rate"] or 0) < 0.9:
                        bad.append(found[-1])
        if not found:
            return Verdict(NOT_RUN, f"no finished run of {model} on {words}")
        wanted = len(ops) * (len(ranges) if ranges is not None else len(RANGES))
        head = f"{len(found)} of the {wanted} (operation, range) pairs run"
        return Verdict(NOT_REPRODUCED if bad else REPRODUCED,
                       f"{head}; below 90 %: " + "; ".join(bad) if bad else f"{head}, each ≥ 90 %: " + "; ".join(found))

    return check


def _redundancy(ctx) -> Verdict:
    best = strongest(ctx.runs)
    runs = {m: best.get((m, "div", 10)) for m in PUBLISHED_REDUNDANCY}
    if any(r is None for r in runs.values()):
        return Verdict(NOT_RUN, "needs finished runs of nmru and realnpu on ÷ with input_size 10")
    ours = {m: r["summary"]["success_rate"] for m, r in runs.items()}
    text = "; ".join(f"{m}: {100 * v:.1f} % (published {100 * PUBLISHED_REDUNDANCY[m]:.1f} %)" for m, v in ours.items())
    text += (" (the division paper's runs: 100,000 steps, the NMRU at learning rate 10⁻² with gradient-norm clipping "
             "1; the RealNPU's figure is the original unit's, 15.1 points below the modified one's 85.3 %)")
    return Verdict(REPRODUCED if ours["nmru"] > ours["realnpu"] else NOT_REPRODUCED,
                   f"mean success over the ranges, ÷ with input size 10: {text}")


CLAIMS = (
    Claim("The NAU solves + and − on every range (Madsen & Johansen 2020; the Primer, Figures 14–15): ≥ 90 % of "
          "the seeds succeed on each.", _solves("nau", ("add", "sub"), None, "+ and −")),
    Claim("The NMU solves × on the positive ranges (Madsen & Johansen 2020; the Primer, Figure 16): ≥ 90 % of the "
          "seeds succeed on each.", _solves("nmu", ("mul",), POSITIVE_RANGES, "×")),
    Claim("With input redundancy (input size 10) the NMRU's success averaged over the ranges beats the RealNPU's on "
          "÷ (Mistry et al. 2022: NMRU 91.6 %, modified RealNPU 85.3 %, the original about 70 %).", _redundancy),
)

LAYOUT = ("Each operation's runs: success rate (Wilson 95 % interval) per unit and range, solved-at (median step "
          "of the first evaluation below the threshold, successful seeds) and sparsity error (mean, successful "
          "seeds) beside it; ranges in the Primer's order (interpolation → extrapolation).")


def _figure(path: Path, op: str, runs: list[dict]) -> bool:
    """Three panels side by side over the nine ranges: success rate, solved-at, sparsity error; one colour per
    unit."""
    fig = new_figure((15, 4.5))
    if fig is None:
        return False
    axes = fig.subplots(1, 3)
    cmap, width = colors("tab10"), 0.8 / max(1, len(runs))
    for j, run in enumerate(runs):
        per = {s["range"]: s for s in run["summary"]["ranges"]}
        xs = [r - 0.4 + width * (j + 0.5) for r in per]
        color, label = cmap(j % 10), run["config"]["model"]
        ys = [100 * (s["success_rate"] or 0) for s in per.values()]
        err = [[y - 100 * s["success_ci"][0] for y, s in zip(ys, per.values())],
               [100 * s["success_ci"][1] - y for y, s in zip(ys, per.values())]]
        axes[0].errorbar(xs, ys, yerr=err, fmt="o", color=color, capsize=2, label=label)
        for ax, k in ((axes[1], "solved_at_median"), (axes[2], "sparsity_error_mean")):
            pts = [(x, s[k]) for x, s in zip(xs, per.values()) if s[k] is not None]
            if pts:
                ax.plot(*zip(*pts), "o", color=color)
    for ax, title in zip(axes, ("success rate (%)", "solved at (step, median)", "sparsity error (mean)")):
        ax.set_xticks(range(len(RANGES)), [f"{i}" for i in range(len(RANGES))])
        ax.set_xlim(-0.5, len(RANGES) - 0.5)
        ax.set_xlabel("range (see the table)")
        ax.set_title(title, fontsize=10)
    axes[0].set_ylim(-5, 105)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=min(len(runs), 6), fontsize=8,
               bbox_to_anchor=(0.5, -0.1))
    fig.suptitle(f"Single-module arithmetic, x₁ {OPERATIONS[op][1]} x₂", fontsize=11)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return True


def _cell(s: dict) -> str:
    return f"{rate(s)}; {num(s['solved_at_median'], '.0f')}; {num(s['sparsity_error_mean'], '.2g')}"


def section(exp, ctx) -> list[str]:
    """The section: per (input size, operation), a figure and a table (units × ranges)."""
    lines = ["## Single-module arithmetic: the NALM Primer's benchmark", "", LAYOUT, "",
             "Ranges: " + "; ".join(f"{i}: {range_label(i)}" for i in range(len(RANGES))) + ".", ""]
    best = strongest(ctx.runs)
    for size in sorted({k[2] for k in best}):
        for op in OPERATIONS:
            runs = [r for (m, o, n), r in best.items() if o == op and n == size]
            if not runs:
                continue
            title = f"x₁ {OPERATIONS[op][1]} x₂" + ("" if size == 2 else f", input size {size}")
            lines += [f"### {title}", ""]
            name = f"single_module_{op}" + ("" if size == 2 else f"_inputs{size}") + ".png"
            if _figure(ctx.folder / name, op, runs):
                lines += [f"![{title}]({name})", ""]
            header = ["unit (seeds × steps)"] + [f"range {i}" for i in range(len(RANGES))] + ["mean"]
            rows = []
            for run in runs:
                tr, per = run["config"]["train"], {s["range"]: s for s in run["summary"]["ranges"]}
                rows.append([f"{run['config']['model']} ({tr['seeds']} × {tr['iterations']:,})"]
                            + [_cell(per[i]) if i in per else "" for i in range(len(RANGES))]
                            + [f"{100 * run['summary']['success_rate']:.0f} %"])
            lines += ["Cells: success [Wilson 95 %]; solved-at; sparsity error.", "", *table(header, rows)]
            lines += _published(op, size, runs)
    return lines


def _published(op: str, size: int, runs: list[dict]) -> list[str]:
    """Ours beside the published success rates of the same unit, operation and ranges (:data:`PUBLISHED_RANGES`)."""
    rows = []
    for run in runs:
        published = PUBLISHED_RANGES.get((run["config"]["model"], op)) if size == 2 else None
        if published:
            per = {s["range"]: s for s in run["summary"]["ranges"]}
            rows.append([run["config"]["model"]] + [
                f"{100 * per[i]['success_rate']:.0f} / {100 * p:.0f}" if i in per else f"– / {100 * p:.0f}"
                for i, p in enumerate(published)])
    if not rows:
        return []
    return ["", f"Success (%), ours / published ({PUBLISHED_SOURCE}; same set-up, 25 seeds):", "",
            *table(["unit"] + [f"range {i}" for i in range(len(RANGES))], rows)]
