"""The report section, claims, grids and cost model of program-add and program-eval (:mod:`.programs`):
Figure 4 and supplementary Figure 6 of Trask et al. (2018, §4.4) as % of digits correct against the number of
digits of the literals, one line per model, beside the paper's (qualitative) claims."""

from __future__ import annotations

from pathlib import Path

from nalm.engine.experiment import NOT_REPRODUCED, NOT_RUN, REPRODUCED, Verdict
from nalm.engine.reporting import best_runs, colors, figure_name, new_figure, num, settings, table, training_text

from .config import MODEL_OPTIONS, model_options

BASELINES = ("ugrnn", "lstm", "dnc")
ORDER = ("ugrnn", "lstm", "dnc", "lstm-nalu", "lstm-nau", "lstm-nau-nmu")
SPLIT_TEXT = {"valid": "training range", "test3": "3-digit", "test4": "4-digit"}
WHERE = {"valid": "the training range's programs", "test4": "the 4-digit literals' programs"}
FIT, EXTRAPOLATES, FAILS, STABLE_POINTS = 90.0, 90.0, 50.0, 5.0
#: Adam's learning rate of every row (the paper gives none); the claims read runs at it, controlled runs change it.
LEARNING_RATE = 1e-2

FITS = (f"All models (UGRNN, LSTM, DNC, LSTM-configured NALU) fit the training range: ≥ {FIT:g} % of digits "
        f"correct (median over seeds) on held-out programs with literals from the training range.")
ONLY_NALU = (f"Only the NALU extrapolates: on 4-digit literals the LSTM-configured NALU gets ≥ {EXTRAPOLATES:g} % "
             f"of digits right, the UGRNN, LSTM and DNC < {FAILS:g} %.")
STABLE = (f"The NALU's extrapolation is stable across two orders of magnitude: on 4-digit literals it keeps "
          f"≥ {EXTRAPOLATES:g} % of digits correct, within {STABLE_POINTS:g} points of its training-range score.")

PAPER = {"ugrnn": "fits; fails to extrapolate", "lstm": "fits; fails to extrapolate",
         "dnc": "fits; fails to extrapolate", "lstm-nalu": "fits; extrapolates, stable over two orders of magnitude"}

#: Seconds per training step and per program token (the longest in the batch): a + b·S·B at hidden 32. The shape was
#: fitted to process times of S = 1 and 5 seeds × B = 64 on program-add; the scale to two quick profiles of
#: ``nalm reproduce`` (2 workers, shared 2-core machine): their 12 runs took 910 s, 1.7× the 541 s of the first fit
#: (1.3–2.0× per run, no model apart), so every constant is 1.7× that fit's. E.g. lstm 23 ms per step at S = 5.
STEP_COST = {"ugrnn": (3.6e-4, 4.6e-6), "lstm": (3.4e-4, 8.2e-6), "dnc": (3.2e-3, 4.1e-5),
             "lstm-nalu": (1.16e-3, 9.4e-6), "lstm-nau": (7.7e-4, 9.0e-6), "lstm-nau-nmu": (1.07e-3, 9.7e-6)}
#: Tokens of the longest program in a batch of 64: add 8; eval about 10 per nesting level (20 at nesting 2).
TOKENS = {"add": 8.0, "eval": 10.0}

PAPER_LITERAL = {"gate": "input", "eps": 1e-7}  # the NALU as the paper defines it: g = σ(G z), ε tiny
NEUTRAL_GATE = {"gate_bias": 0.0}  # ablation: our NALU with its gate starting at ½ instead of on the additive path
#: kind -> profile -> [(model, task options, (iterations, seeds, eval_every[, learning rate]))].
GRIDS = {
    "add": {
        "quick": [(m, {}, (3000, 5, 500)) for m in ("lstm", "ugrnn", "lstm-nalu", "lstm-nau")]
        + [("lstm-nalu", PAPER_LITERAL, (3000, 5, 500)), ("dnc", {}, (500, 3, 250))],
        "acceptance": [(m, {}, (10_000, 5, 1000)) for m in ("ugrnn", "lstm", "lstm-nalu", "lstm-nau")]
        + [("lstm-nalu", o, (10_000, 5, 1000)) for o in (PAPER_LITERAL, NEUTRAL_GATE)]
        + [("dnc", {}, (2500, 5, 500))]
        # the controlled runs of the baselines that miss the training range: a tenth of the learning rate, and more
        # steps (the UGRNN 5×; the DNC 4×, the others' 10,000)
        + [("ugrnn", {}, (10_000, 5, 1000, 1e-3)), ("dnc", {}, (2500, 5, 500, 1e-3))]
        + [("ugrnn", {}, (50_000, 5, 5000)), ("dnc", {}, (10_000, 5, 1000))],
        "paper": [(m, {}, (100_000, 100, 2000)) for m in ORDER] + [("lstm-nalu", PAPER_LITERAL, (100_000, 100, 2000))],
    },
    "eval": {
        "quick": [(m, {}, (1000, 3, 250)) for m in ("lstm", "lstm-nalu", "lstm-nau")]
        + [("lstm-nau", {"controller_sees_value": True}, (1000, 3, 250))],
        # the controlled runs: the NALU's controller fed the values, the one thing a value-blind LSTM lacks to tell
        # which branch an if-statement takes; the baselines at 3× the steps (the DNC, 5× as dear per step, at a
        # third of them instead)
        "acceptance": [(m, {}, (10_000, 5, 1000)) for m in ("ugrnn", "lstm", "lstm-nalu", "lstm-nau", "dnc")]
        + [("lstm-nalu", {"controller_sees_value": True}, (10_000, 5, 1000))]
        + [(m, {}, (30_000, 5, 3000)) for m in ("ugrnn", "lstm")] + [("dnc", {}, (3_000, 5, 500))],
        "paper": [(m, {}, (100_000, 100, 2000)) for m in ORDER]
        + [(m, {"controller_sees_value": True}, (100_000, 100, 2000)) for m in ("lstm-nalu", "lstm-nau")],
    },
}


def _label(r: dict) -> str:
    m = r["config"]["model"]
    opts = model_options(r["config"]["task"], m)
    return m + (f" ({', '.join(f'{k}={v}' for k, v in sorted(opts.items()))})" if opts else "")


def _default(r: dict) -> bool:
    """Whether a run has the default model options and learning rate (not a controlled run)."""
    return not model_options(r["config"]["task"], r["config"]["model"]) and \
        r["config"]["train"]["learning_rate"] == LEARNING_RATE


def strongest(runs: list[dict]) -> dict:
    """Per model: its strongest run (most seeds × iterations) with the default model options and learning rate,
    else of any."""
    out = {}
    for m in {r["config"]["model"] for r in runs}:
        mine = [r for r in runs if r["config"]["model"] == m]
        out[m] = next(iter(best_runs([r for r in mine if _default(r)] or mine, lambda r: 0).values()))
    return out


def _controlled(runs: list[dict], model: str, differs) -> dict | None:
    """The strongest run of ``model`` for which ``differs(run)`` holds (a controlled run of its row)."""
    mine = [r for r in runs if r["config"]["model"] == model and r.get("summary") and differs(r)]
    return next(iter(best_runs(mine, lambda r: 0).values()), None)


def _runs_text(r: dict) -> str:
    t = r["config"]["train"]
    return f"{r['experiment']} {_label(r)}, {t['seeds']} seeds × {t['iterations']:,} steps"


def _fit_why(ctx, bad: list[str]) -> str:
    """Why ``bad`` models miss the training range, from their controlled runs: the same row at a lower learning rate,
    and its score against the steps of its runs at the default rate; "" without them."""
    parts, lr_fits, rising, seeds, covered = [], [], [], set(), []
    for m in bad:
        default = sorted((r for r in ctx.runs if r["config"]["model"] == m and _default(r) and r.get("summary")),
                         key=lambda r: r["config"]["train"]["iterations"])
        other = _controlled(ctx.runs, m, lambda r: not model_options(r["config"]["task"], m)
                            and r["config"]["train"]["learning_rate"] != LEARNING_RATE)
        if other is None and len(default) < 2:
            continue
        text = " → ".join(f"{num(_value(r, 'valid'))} % at {r['config']['train']['iterations']:,} steps"
                          for r in default)
        if other is not None:
            text += (f"; {num(_value(other, 'valid'))} % at learning rate "
                     f"{other['config']['train']['learning_rate']:g} and {other['config']['train']['iterations']:,} steps")
            lr_fits.append((_value(other, "valid") or 0) >= FIT)
        if len(default) >= 2:
            rising.append((_value(default[-1], "valid") or 0) >= (_value(default[0], "valid") or 0) + 3)
        parts.append(f"{m} {text}")
        covered.append(m)
        seeds |= {r["config"]["train"]["seeds"] for r in [*default, *([other] if other else [])]}
    if not parts:
        return ""
    missing = [m for m in bad if m not in covered]
    text = ("; ".join(parts) + f"; {ctx.runs[0]['experiment']}, {'/'.join(map(str, sorted(seeds)))} seeds per run, "
            f"learning rate {LEARNING_RATE:g} unless stated"
            + (f"; no controlled run of {', '.join(missing)}, whose cause is not shown" if missing else ""))
    if lr_fits and all(lr_fits) and len(lr_fits) == len(parts):
        return (f"The learning rate: with the one change of a lower rate (ours is {LEARNING_RATE:g}; the paper "
                f"gives none) {', '.join(covered)} fit the training range ({text}).")
    if rising and all(rising) and len(rising) == len(parts):
        return ("The budget: " + ("a lower learning rate does not make them fit, but " if lr_fits else "")
                + f"more steps keep raising their score on the training range, and our budget ends before it reaches "
                  f"{FIT:g} % ({text}).")
    return f"The controlled runs do not single out a cause ({text})."


def _controller_why(ctx, split: str) -> str:
    """Why the LSTM-configured NALU misses ``split`` (``valid``: the training range; ``test4``: 4-digit literals),
    from the same row whose controller sees the values; "" without it."""
    plain, sees = (strongest(ctx.runs).get("lstm-nalu"),
                   _controlled(ctx.runs, "lstm-nalu", lambda r: r["config"]["task"].get("controller_sees_value")))
    if plain is None or sees is None or not _default(plain):
        return ""
    text = (f"training range / 4-digit literals, % digits correct: value-blind {num(_value(plain, 'valid'))} / "
            f"{num(_value(plain, 'test4'))}, seeing the values {num(_value(sees, 'valid'))} / "
            f"{num(_value(sees, 'test4'))}; {_runs_text(plain)} and {_runs_text(sees)}")
    nau = strongest(ctx.runs).get("lstm-nau")
    if nau is not None and None not in (_value(nau, "valid"), _value(nau, "test4")):
        text += (f"; the LSTM-configured NAU, value-blind too, {num(_value(nau, 'valid'))} / "
                 f"{num(_value(nau, 'test4'))}")
    bar = FIT if split == "valid" else EXTRAPOLATES
    (pv, p4), (sv, s4) = ((_value(r, "valid") or 0, _value(r, "test4") or 0) for r in (plain, sees))
    if (_value(sees, split) or 0) >= bar > (_value(plain, split) or 0):
        return (f"The controller: a value-blind LSTM cannot tell which branch an if-statement takes, so the NALU it "
                f"configures misses {WHERE[split]}; fed the values (the one change) it reaches them ({text}).")
    if sv >= pv + 10 and s4 < p4:
        return (f"The controller: the if-statements need the values to choose a branch; value-blind, the controller "
                f"cannot choose, and the NALU it configures misses the training range; fed the values (the one "
                f"change), it fits more of it but must now read numbers beyond its training range to choose, and "
                f"extrapolates worse. Either way the unit sits behind a controller that does not extrapolate ({text}).")
    return f"The controller that sees the values does not single it out ({text})."


def _why(ctx, bad: list[str], split: str = "valid") -> str:
    """The causes the controlled runs show for the rows in ``bad`` missing ``split``."""
    return " ".join(w for w in (_fit_why(ctx, [m for m in bad if m != "lstm-nalu"]),
                                _controller_why(ctx, split) if "lstm-nalu" in bad else "") if w)


def _value(r: dict, split: str, metric: str = "digits"):
    return (r["summary"] or {}).get(f"{split}_{metric}")


def _scores(best: dict, models, split: str) -> str:
    return "; ".join(f"{_label(best[m])} {num(_value(best[m], split))} %" for m in models if m in best)


def _scale(best: dict, models) -> str:
    runs = [best[m] for m in models if m in best]
    return ", ".join(sorted({f"{r['config']['train']['seeds']} seeds × {r['config']['train']['iterations']:,}"
                             for r in runs}))


def check_fits(ctx) -> Verdict:
    best = strongest(ctx.runs)
    found = [m for m in ("ugrnn", "lstm", "dnc", "lstm-nalu") if m in best]
    if not found:
        return Verdict(NOT_RUN, "no finished run of ugrnn, lstm, dnc or lstm-nalu")
    bad = [m for m in found if not (_value(best[m], "valid") or 0) >= FIT]
    missing = [m for m in ("ugrnn", "lstm", "dnc", "lstm-nalu") if m not in best]
    text = (f"% digits correct on the training range, median over seeds ({_scale(best, found)}): "
            + _scores(best, found, "valid") + (f"; not run: {', '.join(missing)}" if missing else "")
            + (f"; below {FIT:g} %: {', '.join(bad)}" if bad else ""))
    return Verdict(NOT_REPRODUCED, text, _why(ctx, bad)) if bad else Verdict(REPRODUCED, text)


def check_only_nalu(ctx) -> Verdict:
    best = strongest(ctx.runs)
    base = [m for m in BASELINES if m in best]
    if "lstm-nalu" not in best or not base:
        return Verdict(NOT_RUN, "needs a finished lstm-nalu run and one of ugrnn, lstm, dnc")
    nalu = _value(best["lstm-nalu"], "test4") or 0
    bad = [m for m in base if not (_value(best[m], "test4") or 0) < FAILS]
    text = (f"% digits correct on 4-digit literals, median over seeds ({_scale(best, base + ['lstm-nalu'])}): "
            + _scores(best, ("lstm-nalu", *base), "test4"))
    if nalu < EXTRAPOLATES:
        text += f"; the NALU is below {EXTRAPOLATES:g} %"
    if bad:
        text += f"; baselines at or above {FAILS:g} %: {', '.join(bad)}"
    others = [m for m in ("lstm-nau", "lstm-nau-nmu") if m in best]
    if others:
        text += " (beyond the paper: " + _scores(best, others, "test4") + ")"
    if nalu >= EXTRAPOLATES and not bad:
        return Verdict(REPRODUCED, text)
    return Verdict(NOT_REPRODUCED, text, _why(ctx, ["lstm-nalu"] if nalu < EXTRAPOLATES else [], "test4"))


def check_stable(ctx) -> Verdict:
    best = strongest(ctx.runs)
    if "lstm-nalu" not in best:
        return Verdict(NOT_RUN, "no finished lstm-nalu run")
    r = best["lstm-nalu"]
    v = [_value(r, s) for s in ("valid", "test3", "test4")]
    text = (f"{_label(r)} ({_scale(best, ['lstm-nalu'])}): % digits correct on the training range / 3-digit / "
            f"4-digit literals {' / '.join(num(x) for x in v)}")
    ok = None not in v and v[2] >= EXTRAPOLATES and v[0] - v[2] <= STABLE_POINTS
    return Verdict(REPRODUCED, text) if ok else Verdict(NOT_REPRODUCED, text, _why(ctx, ["lstm-nalu"], "test4"))


# -- the section -----------------------------------------------------------------------------------------------

INTRO = {
    "add": ("## Supplementary Figure 6: adding two integers (program-add)",
            "`print((a + b))`, one token per step, numbers whole in a value channel (×`value_scale`); trained on "
            "a, b from [0, 100), tested on 3-digit [100, 1000) and 4-digit [1000, 10000) literals."),
    "eval": ("## Figure 4: program evaluation (program-eval)",
             "Learning-to-Execute programs composing `nesting` operations (assignments, if-statements, + and − by "
             "default), generated and evaluated by nalm's own interpreter (never by Python), one token per step; "
             "trained on literals from [0, 100), tested on 3- and 4-digit literals. The configured units (lstm-nalu, "
             "lstm-nau) get a value-blind LSTM by default, which cannot tell which branch an if-statement takes; "
             "rows marked `controller_sees_value=True` feed it the values too."),
}
HOW = ("**How to read the scores.** % digits correct (the paper's metric): the rounded prediction against the "
       "integer target, digits right-aligned, a missing or extra digit or a wrong sign counting as wrong, mean over "
       "the fixed programs of each set; then the median over seeds [25 %, 75 % quantiles] at each seed's step with "
       "the lowest RMSE on the training-range set. The paper publishes Figures 4 and 6 as plots without numbers, so "
       "the *paper* column gives its claim. `lstm-nalu` is the paper's model with our defaults: the gate's logit "
       "comes from the LSTM state alone, with an initial bias of 10 (it starts on the additive path), and the log "
       "path's ε is 0.5; `lstm-nalu (eps=1e-07, gate=input)` is the NALU exactly as the paper defines it "
       "(g = σ(G z)). `lstm-nau` and `lstm-nau-nmu` (Madsen & Johansen 2020's units, configured the same way) are "
       "beyond the paper.")


def _setting_key(config: dict) -> dict:
    config.pop("model")
    for k in MODEL_OPTIONS:
        config["task"].pop(k, None)
    for k in ("seeds", "first_seed", "iterations", "eval_every"):  # each row says its own training scale
        config["train"].pop(k, None)
    return config


def _describe(config: dict) -> str:
    t = config["task"]
    parts = [f"literals [{t['train_low']}, {t['train_high']}) in training", f"{t['loss'].upper()} loss",
             f"value scale {t['value_scale']:g}", f"hidden {t['hidden_size']}"]
    if "nesting" in t:
        parts.insert(0, f"nesting {t['nesting']} of {t['operations'].replace(',', ', ')}")
    train = {k: v for k, v in config["train"].items() if k != "eval_every"}  # rows differ in scale and evaluation
    return ", ".join(parts + training_text({**config, "train": train}, 1e-2, 64)[1:])  # [1:]: no seeds × iterations


def _rank(r: dict) -> tuple:
    m = r["config"]["model"]
    return (ORDER.index(m) if m in ORDER else len(ORDER), _label(r))


def _cell(s: dict, key: str, fmt: str = ".1f") -> str:
    iqr = s.get(f"{key}_iqr")
    return num(s.get(key), fmt) + (f" [{num(iqr[0], fmt)}, {num(iqr[1], fmt)}]" if iqr else "")


def section(exp, ctx) -> list[str]:
    head, intro = INTRO[exp.kind]
    lines = [head, "", intro, "", HOW, ""]
    if not ctx.runs:
        return lines + [f"No finished run yet: `nalm reproduce --only {exp.name}`.", ""]
    for k, setting in enumerate(settings(ctx.runs, _setting_key, _describe)):
        runs = sorted(best_runs(setting["runs"], _label).values(), key=_rank)
        rows = []
        for r in runs:
            s = r["summary"] or {}
            tr = r["config"]["train"]
            seeds = f"{tr['seeds']} × {tr['iterations']:,}" + (f" ({s['diverged']} diverged)" if s.get("diverged")
                                                                else "")
            rows.append([_label(r), seeds, *(_cell(s, f"{x}_digits") for x in ("valid", "test3", "test4")),
                         _cell(s, "test4_exact"), _cell(s, "test4_mae", ".3g"),
                         PAPER.get(r["config"]["model"], "— (beyond the paper)")])
        name = figure_name(f"figure_{exp.name.replace('-', '_')}", k)
        lines += [f"### {setting['title']}", ""]
        if _figure(ctx.folder / name, runs, f"{head[3:]}\n{_wrap(setting['title'])}"):
            lines += [f"![% digits correct against the number of digits ({setting['title']})]({name})", ""]
        lines += table(["model", "seeds × iterations", "% digits, training range", "% digits, 3-digit", "% digits, 4-digit",
                        "% exact, 4-digit", "MAE, 4-digit", "paper"], rows)
    return lines


def _wrap(text: str, width: int = 110) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def _figure(path: Path, runs: list[dict], title: str) -> bool:
    """% digits correct against the number of digits of the literals (2: the training range), one line per model,
    median over seeds with the 25–75 % range as error bars."""
    fig = new_figure((8, 4.8))
    if fig is None:
        return False
    ax, cmap = fig.add_subplot(), colors("tab10")
    for i, r in enumerate(runs):
        s = r["summary"] or {}
        xs, ys, lo, hi = [], [], [], []
        for x, split in zip((2, 3, 4), ("valid", "test3", "test4")):
            v, iqr = s.get(f"{split}_digits"), s.get(f"{split}_digits_iqr")
            if v is not None:
                iqr = iqr or [v, v]
                xs.append(x), ys.append(v), lo.append(v - iqr[0]), hi.append(iqr[1] - v)
        if xs:  # lines side by side (offsets of 0.03) so that equal scores stay visible
            tr = r["config"]["train"]
            ax.errorbar([x + 0.03 * (i - (len(runs) - 1) / 2) for x in xs], ys, yerr=[lo, hi], color=cmap(i % 10),
                        marker="os^vDP"[i % 6], capsize=3, lw=1.5, ls="-" if r["config"]["model"] in PAPER else "--",
                        label=f"{_label(r)}, {tr['seeds']} × {tr['iterations']:,}")
    ax.set_xticks([2, 3, 4], ["≤ 2 (training)", "3", "4"])
    ax.set_xlabel("digits of the literals")
    ax.set_ylabel("% digits correct")
    ax.set_ylim(0, 102)
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return True
