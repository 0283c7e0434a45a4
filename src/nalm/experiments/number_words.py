"""Table 3 and Figure 3 of Trask et al. (2018, §4.3): number words to their value, "seven hundred and two" → 702.

Data, split (169 / 200 / 631 of 0–999), seed-axis model (embedding 256 → LSTM 10 → an output unit on the last state,
as the authors told Madsen & Johansen 2020) and metric are :mod:`nalm.tasks.number_words`. Here each seed trains on
the 169 numbers (squared error, Adam); at its lowest validation MAE its MAE on every split is recorded (Table 3) with
its running estimate after every token of a few test numbers (Figure 3), stored as the artifact ``figure3``. The
claims of SPEC §2.4 are judged against a constant predictor (the training median), so "overfits", "underfits" and
"generalises best" are numbers, not impressions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import ConfigError
from ..reporting import colors, figure_name, median, new_figure, num, settings, table
from ..tasks import number_words as nw
from ..tasks.base import Task, seed_order
from ..train import TrainConfig
from ..units import list_units
from .base import NOT_REPRODUCED, NOT_RUN, REPRODUCED, Claim, Experiment, RunSpec, Verdict, register_experiment

SPLITS = ("train", "validation", "test")
#: Figure 3's numbers by default: for each target, the test number of the same length in tokens nearest to it (the
#: paper drew random test numbers; a lone "eighty" was one, since training saw only "eighty one/four/seven").
FIGURE3_TARGETS = (80, 47, 702, 358)
#: What the paper says of each row (§4.3; the published Table 3 values are not in our verified sources).
PAPER_CLAIMS = {"linear": "overfits badly, generalises poorly", "nac": "underfits train and test",
                "nalu": "generalises best, by a large margin"}
ROW_LABELS = {"linear": "LSTM (linear output)", "nac": "LSTM + NAC", "nalu": "LSTM + NALU"}
MODEL_ORDER = ("linear", "nac", "nalu")
#: Training protocols (batch size, learning rate) of the acceptance and paper profiles; the paper gives none. Full batch
#: at 1e-2 suits the linear output (it must grow weights of hundreds, |h| < 1); batch 32 at 1e-3 suited the NALU best.
PROTOCOLS = ((169, 1e-2), (32, 1e-2), (32, 1e-3))
_WORD_VALUES = {nw.words(v)[0]: v for v in [*range(20), *range(20, 100, 10)]}


@dataclass(frozen=True)
class NumberWordsOptions:
    """Task options of ``number-words`` (sizes: the NALU authors' correspondence, embedding ~256, LSTM ~10)."""

    split_seed: int = field(default=0, metadata={"help": "seed of the 169/200/631 split, the same for every model "
                                                         "and model seed"})
    embedding_size: int = field(default=256, metadata={"help": "size of the token embedding"})
    hidden_size: int = field(default=10, metadata={"help": "hidden size of the LSTM"})
    figure_numbers: tuple = field(default=(), metadata={"help": "test numbers whose running estimates Figure 3 "
                                                                "shows; empty: four chosen from the test split"})

    def __post_init__(self) -> None:
        nw.NumberWordsConfig(self.split_seed, self.embedding_size, self.hidden_size)  # validates them
        if not isinstance(self.figure_numbers, (tuple, list)):
            raise ConfigError(f"figure_numbers must be a list of test numbers, got {self.figure_numbers!r}")
        object.__setattr__(self, "figure_numbers", tuple(self.figure_numbers))  # a stored config gives a list
        test = set(nw.split(self.split_seed)["test"].tolist())
        for n in self.figure_numbers:
            if isinstance(n, bool) or not isinstance(n, int) or n not in test:
                raise ConfigError(f"figure number {n!r} is not a test number of split seed {self.split_seed} "
                                  f"(Figure 3 shows numbers the model never saw); e.g. {sorted(test)[:5]}")
        if len(set(self.figure_numbers)) != len(self.figure_numbers) or len(self.figure_numbers) > 6:
            raise ConfigError(f"figure_numbers must be at most 6 distinct numbers, got {self.figure_numbers}")


def figure_numbers(config: NumberWordsOptions) -> list[int]:
    """The test numbers of Figure 3: the configured ones, else the nearest of the same length to FIGURE3_TARGETS."""
    if config.figure_numbers:
        return list(config.figure_numbers)
    test = nw.split(config.split_seed)["test"].tolist()
    return [min(test, key=lambda n: (len(nw.words(n)) != len(nw.words(t)), abs(n - t))) for t in FIGURE3_TARGETS]


def prefix_values(n: int) -> list[int]:
    """The value of each prefix of ``n``'s words read as a number, the ideal running estimate:
    702 → [7, 700, 700, 702] ("seven", "seven hundred", "seven hundred and", "seven hundred and two")."""
    out, value = [], 0
    for w in nw.words(n):
        value = value * 100 if w == "hundred" else value + _WORD_VALUES.get(w, 0)  # "and" adds nothing
        out.append(value)
    return out


def constant_errors(split_seed: int) -> dict[str, float]:
    """MAE on each split of the best constant for the training set (its median): the floor of "learned nothing"."""
    s = nw.split(split_seed)
    c = float(np.median(s["train"]))
    return {name: float(np.abs(v - c).mean()) for name, v in s.items()}


class NumberWordsTask(Task):
    """Training on the 169 numbers (each seed its own shuffled order), evaluation on every split, Figure 3's
    estimates at every evaluation (so the trainer keeps each seed's at its best step, and a resumed run too)."""

    name = "number-words"
    selection_metric = "validation_mae"
    finite_metrics = ("train_mae", "validation_mae")
    success_metric = None

    def __init__(self, config: NumberWordsOptions, seeds):
        self.seeds = list(seeds)
        self.sets = nw.evaluation_sets(config.split_seed)
        self.numbers = figure_numbers(config)
        self.figure_tokens = nw.tensors(self.numbers)[0]
        self._on: tuple | None = None

    def batch(self, step, bitgens, batch_size, buffer=None):
        tokens, targets = self.sets["train"]
        x, y = nw.training_batch(tokens, targets, seed_order(self.seeds, step, batch_size, tokens.shape[1]))
        return x, y, None

    @torch.no_grad()
    def evaluate(self, model, num_seeds, device=None):
        if self._on is None or self._on[0] != device:
            self._on = (device, {k: (x.to(device), y.to(device)) for k, (x, y) in self.sets.items()},
                        self.figure_tokens.to(device))
        _, sets, tokens = self._on
        metrics = nw.split_errors(model, sets)
        est = model.running_estimates(tokens).double().cpu()  # (S, N, T), left padded
        for j, n in enumerate(self.numbers):
            k = len(nw.words(n))
            for i in range(k):
                metrics[f"estimate_{n}_{i + 1}"] = est[:, j, est.shape[2] - k + i]
        return metrics


def figure3_artifact(numbers: list[int], records: list[dict]) -> dict:
    """Figure 3's data from the per-seed records: each seed's running estimates at its best step."""
    items = []
    for n in numbers:
        k = len(nw.words(n))
        items.append({"number": n, "words": nw.words(n), "ideal": prefix_values(n),
                      "estimates": [[r.get(f"estimate_{n}_{i + 1}") for i in range(k)] for r in records]})
    return {"seeds": [r["seed"] for r in records], "numbers": items}


def _spread(values: list[float]) -> dict:
    """Median, quartiles and range; an infinite error counts as one (a seed that blew up), a missing one not."""
    v = np.clip([x for x in values if x is not None and not math.isnan(x)], -1e308, 1e308)
    stats = np.percentile(v, [50, 25, 75, 0, 100]).tolist() if v.size else [None] * 5
    return dict(zip(("median", "q25", "q75", "min", "max"),
                    [x if x is None or abs(x) < 1e300 else math.copysign(math.inf, x) for x in stats]))


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


def _strongest(ctx) -> dict:
    """:func:`_select` over the runs at the paper's sizes (embedding 256, LSTM 10)."""
    return _select([r for r in ctx.runs if (r["config"]["task"].get("embedding_size"), r["config"]["task"].get(
        "hidden_size")) == (256, 10) and r["summary"]])


def _mae(run: dict, split: str) -> float | None:
    return run["summary"].get(f"{split}_mae_median")


def _fmt(v) -> str:
    return num(v, ".3g") if v is not None and abs(v) < 1000 else num(v, ",.0f")


def _overfits(ctx) -> Verdict:
    if (run := _strongest(ctx).get("linear")) is None:
        return Verdict(NOT_RUN, "no finished run of the LSTM with a linear output")
    tr, te = _mae(run, "train"), _mae(run, "test")
    ok = tr is not None and te is not None and te >= 2 * tr
    return Verdict(REPRODUCED if ok else NOT_REPRODUCED,
                   f"LSTM (linear output), median over {run['summary']['seeds']} seeds: train MAE {_fmt(tr)}, "
                   f"test MAE {_fmt(te)} (overfitting means test ≥ 2 × train)")


def _underfits(ctx) -> Verdict:
    if (run := _strongest(ctx).get("nac")) is None:
        return Verdict(NOT_RUN, "no finished run of LSTM + NAC")
    s = run["summary"]
    tr, te, ctr, cte = _mae(run, "train"), _mae(run, "test"), s["constant_train_mae"], s["constant_test_mae"]
    ok = tr is not None and te is not None and tr >= 0.5 * ctr and te >= 0.5 * cte
    return Verdict(REPRODUCED if ok else NOT_REPRODUCED,
                   f"LSTM + NAC, median over {s['seeds']} seeds: train MAE {_fmt(tr)}, test MAE {_fmt(te)}; a "
                   f"constant (the training median) scores {_fmt(ctr)} and {_fmt(cte)} (underfitting means at "
                   f"least half of those on both)")


def _generalises_best(ctx) -> Verdict:
    best = _strongest(ctx)
    if "nalu" not in best:
        return Verdict(NOT_RUN, "no finished run of LSTM + NALU")
    others = {m: _mae(best[m], "test") for m in ("linear", "nac") if m in best}
    if not others:
        return Verdict(NOT_RUN, "LSTM + NALU ran, but neither the linear nor the NAC output to compare with")
    nalu = _mae(best["nalu"], "test")
    ok = nalu is not None and all(2 * nalu <= v for v in others.values() if v is not None)
    text = ", ".join(f"{ROW_LABELS[m]} {_fmt(v)}" for m, v in others.items())
    missing = [ROW_LABELS[m] for m in ("linear", "nac") if m not in best]
    return Verdict(REPRODUCED if ok else NOT_REPRODUCED,
                   f"median test MAE: LSTM + NALU {_fmt(nalu)}; {text} (a large margin means at most half of each)"
                   + (f"; not run: {', '.join(missing)}" if missing else ""))


@register_experiment
class NumberWords(Experiment):
    name = "number-words"
    help = "Table 3 and Figure 3: English number words to their value"
    description = ("Table 3 and Figure 3 (Trask et al. 2018, §4.3): the numbers 0–999 in British English words "
                   "(\"seven hundred and two\"), one token per word; embedding 256 → LSTM 10 → an output unit on the "
                   "last state regresses the value. 169 training, 200 validation, 631 test numbers; MAE per split at "
                   "each seed's best validation step. The defaults suit the NALU; a linear output learns with "
                   "--batch-size 169 --learning-rate 1e-2.")
    Config = NumberWordsOptions
    models = MODEL_ORDER
    default_model = "nalu"
    model_help = "output unit after the LSTM: linear (the paper's plain LSTM row), nac, nalu, or any registered unit"
    #: The NALU's best protocol on validation (10 seeds × 15,000 steps: batch 32 at 1e-3 beat full batch at 1e-2 and
    #: batch 32 at 1e-2); the linear output wants full batch at 1e-2 (``--batch-size 169 --learning-rate 1e-2``).
    train_defaults = {"iterations": 15_000, "batch_size": 32, "learning_rate": 1e-3, "eval_every": 250}
    splits = SPLITS
    smoke = {"embedding_size": 8, "hidden_size": 4}
    claims = (
        Claim("The LSTM with a linear output overfits: its test MAE is high against its low train MAE.", _overfits),
        Claim("LSTM + NAC underfits: its train and test MAE stay near those of a constant prediction.", _underfits),
        Claim("LSTM + NALU generalises best, by a large margin (median test MAE at most half the others').",
              _generalises_best),
    )

    def check_model(self, model):
        if model not in list_units():
            raise ConfigError(f"unknown output unit {model!r} for {self.name}; choose from: {', '.join(list_units())}")

    def task(self, config, seeds):
        return NumberWordsTask(config, seeds)

    def model(self, config, model, num_seeds):
        return nw.NumberWordsModel(model, num_seeds=num_seeds, embedding_size=config.embedding_size,
                                   hidden_size=config.hidden_size)

    def train(self, spec, **kwargs):
        result = super().train(spec, **kwargs)
        result.artifacts["figure3"] = figure3_artifact(figure_numbers(spec.task_config()), result.records)
        return result

    def summarize(self, spec, result):
        """MAE per split at each seed's best step: median, quartiles and range over seeds (diverged seeds keep the
        values of their best step before they diverged), and the constant predictor's MAE beside them."""
        recs = result.records
        out = {"seeds": len(recs), "diverged": sum(bool(r["diverged"]) for r in recs),
               "best_step_median": median([r["best_step"] for r in recs])}
        for split in SPLITS:
            for stat, v in _spread([r.get(f"{split}_mae") for r in recs]).items():
                out[f"{split}_mae_{stat}"] = v
            out[f"{split}_mae_init_median"] = median([r.get(f"{split}_mae_init") for r in recs])
        out.update({f"constant_{k}_mae": v for k, v in constant_errors(spec.task_config().split_seed).items()})
        return out

    def run_name(self, config, model):
        extra = "" if (config.embedding_size, config.hidden_size) == (256, 10) else \
            f"/e{config.embedding_size}h{config.hidden_size}"
        return f"{self.name}/{model}" + extra + (f"/split{config.split_seed}" if config.split_seed else "")

    def grid(self, profile):
        """quick: each model with the protocol that did best on validation in our short runs (5 seeds); acceptance
        and paper: every model with each of PROTOCOLS (the claims keep, per model, the lowest validation MAE)."""
        if profile == "quick":
            def tc(iterations, batch, lr):
                return TrainConfig(iterations=iterations, seeds=5, batch_size=batch, learning_rate=lr, eval_every=250)
            return [RunSpec(self.name, "linear", {}, tc(15_000, 169, 1e-2)),
                    RunSpec(self.name, "nac", {}, tc(5_000, 169, 1e-2)),
                    RunSpec(self.name, "nalu", {}, tc(15_000, 32, 1e-3))]
        seeds, iterations, every = {"acceptance": (10, 20_000, 500), "paper": (100, 100_000, 1000)}.get(profile,
                                                                                                         (0, 0, 0))
        return [RunSpec(self.name, m, {}, TrainConfig(iterations=iterations, seeds=seeds, batch_size=batch,
                                                      learning_rate=lr, eval_every=every))
                for m in MODEL_ORDER for batch, lr in PROTOCOLS] if seeds else []

    def cost(self, spec):
        """CPU seconds of one core: per step 2.2 ms + S × (0.15 ms + 0.8 ms × batch / 169), fitted to training runs
        of 400 steps at S = 1, 10, 30 and batch 32, 169 (linear and NALU within 10 %), measured while the machine's
        2 cores ran about 12 other processes, so on an idle core it is pessimistic."""
        batch = min(spec.train.batch_size, nw.SPLIT_SIZES["train"])
        return spec.train.iterations * (2.2e-3 + spec.train.seeds * (1.5e-4 + 8e-4 * batch / 169))

    def sample(self, config, split, count, seed):
        """``count`` numbers of ``split`` drawn with ``seed``: number, words, token ids, and the padded model input."""
        items = nw.examples(split, count, seed=seed, split_seed=config.split_seed)
        return [{**e, "input": nw.pad([e["number"]])[0].tolist(), "target": float(e["number"])} for e in items]

    # -- report ----------------------------------------------------------------------------------------------------
    def report(self, ctx):
        lines = ["## Table 3 and Figure 3: number words to numbers", "", INTRO, "",
                 f"Vocabulary ({len(nw.VOCABULARY) - 1} words, one token each, and the pad id 0): "
                 + ", ".join(f"`{w}`" for w in nw.VOCABULARY[1:]) + ".", ""]
        for k, setting in enumerate(settings(ctx.runs, _setting_key, _describe)):
            lines += _setting_section(setting, ctx, figure_name("figure3_number_words", k))
        return lines


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
    const = constant_errors(setting["config"]["task"]["split_seed"])
    rows.append(["constant (training median)", "—", "—", *(_fmt(const[k]) for k in SPLITS), "—",
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
