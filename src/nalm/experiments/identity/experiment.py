"""Figure 1 of Trask et al. (2018, §1.1): MLPs fail to extrapolate the identity (data: :mod:`nalm.experiments.identity.task`)."""

from __future__ import annotations

import math
from pathlib import Path

from nalm.engine.experiment import (NOT_REPRODUCED, NOT_RUN, REPRODUCED, Claim, Experiment, RunSpec, Verdict,
                                    register_experiment)
from nalm.engine.metrics import summarize
from nalm.engine.ranges import uniform_1_2
from nalm.engine.reporting import colors, figure_name, new_figure, num, range_text, settings, table, training_text
from nalm.engine.task import seed_generators
from nalm.engine.train import TrainConfig
from nalm.errors import ConfigError
from nalm.nn.models import ACTIVATIONS

from .task import FIGURE1_ACTIVATIONS, IdentityConfig, IdentityTask


def _curves(ctx) -> list[tuple[str, dict, dict]]:
    """(activation, summary, error curve) of the largest run of each activation."""
    best: dict[str, dict] = {}
    for r in ctx.runs:
        tr = r["config"]["train"]
        m = r["config"]["model"]
        if m not in best or tr["seeds"] * tr["iterations"] > best[m]["config"]["train"]["seeds"] * \
                best[m]["config"]["train"]["iterations"]:
            best[m] = r
    return [(m, r["summary"] or {}, ctx.store.artifact(r["key"], "error_curve")) for m, r in best.items()]


def _grows(ctx) -> Verdict:
    rows = [(m, s.get("mae_inside"), s.get("mae_outside")) for m, s, _ in _curves(ctx)]
    rows = [r for r in rows if r[1] is not None and r[2] is not None]
    if not rows:
        return Verdict(NOT_RUN, "no finished identity run")
    flat = [f"{m} ({i:.3g} → {o:.3g})" for m, i, o in rows if not o > i]
    text = (f"mean absolute error inside → outside [−5, 5] for {len(rows)} nonlinearities; "
            + (f"not larger outside for: {', '.join(flat)}" if flat else
               "larger outside for all, e.g. " + ", ".join(f"{m} {i:.3g} → {o:.3g}" for m, i, o in rows[:4])))
    return Verdict(NOT_REPRODUCED if flat else REPRODUCED, text)


def _prelu_least(ctx) -> Verdict:
    rows = sorted((s["mae_outside"], m) for m, s, _ in _curves(ctx) if s.get("mae_outside") is not None)
    if not rows or "prelu" not in [m for _, m in rows]:
        return Verdict(NOT_RUN, "no finished identity run of PReLU")
    rank = [m for _, m in rows].index("prelu") + 1
    text = (f"PReLU ranks {rank} of {len(rows)} by error outside the training range (lowest: "
            + ", ".join(f"{m} {v:.3g}" for v, m in rows[:3]) + ")")
    return Verdict(REPRODUCED if rank <= 3 else NOT_REPRODUCED, text)


@register_experiment
class Identity(Experiment):
    name = "identity"
    help = "Figure 1: an MLP learning the identity on [-5, 5]"
    description = "Figure 1: a 1-8-8-8-1 MLP learns y = x on [-5, 5], tested on [-20, 20]."
    Config = IdentityConfig
    models = FIGURE1_ACTIVATIONS
    default_model = "relu6"
    model_help = "nonlinearity of the hidden layers"
    model_flags = ("--activation", "--model")
    protocol = 2
    train_defaults = {"iterations": 10_000, "learning_rate": 1e-2, "regularizers": {}}
    splits = ("train", "interpolation", "extrapolation")
    smoke = {"evaluation_size": 100, "grid_points": 21}
    claims = (
        Claim("Every nonlinearity's error grows outside the training range [−5, 5].", _grows),
        Claim("Near-linear nonlinearities such as PReLU extrapolate best (PReLU among the 3 lowest errors outside).",
              _prelu_least),
    )

    def check_model(self, model):
        if model not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {model!r}; choose from: {', '.join(ACTIVATIONS)}")

    def task(self, config, seeds):
        return IdentityTask(config)

    def model(self, config, model, num_seeds):
        return IdentityTask(config).build_model(model, num_seeds)

    def summarize(self, spec, result):
        """No success criterion: the normalised errors and Figure 1's error inside and outside the training range."""
        s = summarize(result.records)
        s = {k: s[k] for k in ("seeds", "diverged", "normalized_interpolation_error", "normalized_extrapolation_error")}
        s.update(result.artifacts.pop("summary"))
        return s

    def merge_artifacts(self, spec, parts, records):
        """Figure 1's curve of a run trained in seed blocks (``--seed-block``): the mean over all blocks' models,
        each block weighted by its number of models; equal to the curve of one block of all seeds up to rounding."""
        curves = [a["error_curve"] for _, a in parts]
        n = sum(c["models"] for c in curves)
        mae = [sum(c["models"] * c["mae"][i] for c in curves if c["models"]) / n if n else math.nan
               for i in range(len(curves[0]["x"]))]
        lo, hi = curves[0]["train_range"]
        inside = [v for x, v in zip(curves[0]["x"], mae) if lo <= x <= hi]
        outside = [v for x, v in zip(curves[0]["x"], mae) if not lo <= x <= hi]
        return {"error_curve": {**curves[0], "mae": mae, "models": n},
                "summary": {"mae_inside": sum(inside) / len(inside), "mae_outside": sum(outside) / len(outside)}}

    def grid(self, profile):
        its, seeds = {"quick": (3_000, 20), "acceptance": (10_000, 20), "paper": (10_000, 100)}.get(profile, (0, 0))
        if not its:
            return []
        train = TrainConfig(iterations=its, seeds=seeds, learning_rate=1e-2, regularizers={})
        return [RunSpec(self.name, a, {}, train) for a in FIGURE1_ACTIVATIONS]

    def cost(self, spec):
        # 20 seeds × 3,000 steps: 5.0 s on a quiet machine; 6.1 s on average in two quick profiles of reproduce on 2
        # workers of a shared 2-core machine (30 runs), which this says (the model before: 4.8 s).
        return spec.train.iterations * (1e-3 + 5e-5 * spec.train.seeds)

    def sample(self, config, split, count, seed):
        task = IdentityTask(config)
        if split == "train":
            bitgens = [g.bit_generator for g in seed_generators([seed], "data")]
            u, _ = uniform_1_2(bitgens, (count, 1))
            x = task.interpolation.transform(u, base=1.0)[0, :, 0]
        else:
            x = task.evaluation_sets()[split][0][0, :count, 0].numpy()
        return [{"x": float(v), "target": float(v)} for v in x]

    def report(self, ctx):
        lines = ["## Figure 1: MLPs fail to extrapolate the identity", ""]
        order = {a: i for i, a in enumerate(FIGURE1_ACTIVATIONS)}

        def key(c):
            c.pop("model")
            return c

        def describe(c):
            t = c["task"]
            layers = " → ".join(str(n) for n in (1, *t.get("hidden_layers", ()), 1))
            return ", ".join([f"identity MLP {layers}", f"train {range_text(t['interpolation_range'])} → test "
                                                         f"{range_text(t['extrapolation_range'])}"]
                             + training_text(c, 1e-2))

        for k, setting in enumerate(settings(ctx.runs, key, describe)):
            lines += [f"### {setting['title']}", ""]
            rows, curves = [], []
            for r in sorted(setting["runs"], key=lambda r: (order.get(r["config"]["model"], len(order)),
                                                         r["config"]["model"])):
                s, curve = r["summary"] or {}, ctx.store.artifact(r["key"], "error_curve")
                if curve:
                    curves.append((r["config"]["model"], curve))
                models = f"{curve['models']} of {s.get('seeds', '?')}" if curve else str(s.get("seeds", "?"))
                rows.append([r["config"]["model"], models, num(s.get("mae_inside"), ".3g"),
                             num(s.get("mae_outside"), ".3g")])
            name = figure_name("figure1_identity", k)
            if curves and _figure(ctx.folder / name, curves, setting["title"]):
                lines += [f"![Figure 1: mean absolute error against the input ({setting['title']})]({name})", ""]
            lines += table(["activation", "models", "MAE inside training range", "MAE outside"], rows)
        return lines


def _figure(path: Path, curves: list[tuple[str, dict]], title: str) -> bool:
    """Figure 1: mean absolute error against the input, one line per activation, the training range shaded."""
    import numpy as np

    fig = new_figure()
    if fig is None:
        return False
    cmap = colors("tab20")
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
