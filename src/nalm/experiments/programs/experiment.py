"""Figure 4 and supplementary Figure 6 of Trask et al. (2018, §4.4): program evaluation after Zaremba & Sutskever's
"Learning to Execute" (2014). Two experiments: ``program-add`` (``print((a + b))``, supplementary Fig. 6) and
``program-eval`` (small programs with assignments, if-statements, + and −, Fig. 4).

Programs come from nalm's own generator and interpreter (:mod:`nalm.experiments.programs.task`; nothing generated is ever run
by Python); a model reads one token per step, numbers whole in a value channel, and regresses the program's value
at the final step (RMSE, the paper's loss). Training literals are drawn from [0, 100); three fixed evaluation sets
(shared by all seeds) hold programs with training-range literals (``valid``, which also selects each seed's best
step), 3-digit literals [100, 1000) (``test3``) and 4-digit literals [1000, 10000) (``test4``). Per set and seed:
the paper's % of digits correct (:func:`nalm.experiments.programs.metrics.digit_accuracy`), exact matches, MAE and RMSE.

Models (:mod:`nalm.experiments.programs.models`): the paper's ``ugrnn``, ``lstm``, ``dnc`` and ``lstm-nalu`` (a NALU whose Ŵ, M̂
and gate come from an LSTM's state at each step), and, beyond the paper, ``lstm-nau`` and ``lstm-nau-nmu``.
Options are in :mod:`.config`, the report section in :mod:`.report`.
"""

from __future__ import annotations

import math
from dataclasses import fields

import numpy as np
import torch

from nalm.engine.experiment import Claim, Experiment, RunSpec, register_experiment
from nalm.engine.task import Task, evaluation_generator, seed_generators
from nalm.engine.train import TrainConfig
from nalm.errors import ConfigError

from . import report as R
from .config import METRICS, MODEL_OPTIONS, MODELS, SPLITS, AddConfig, EvalConfig, model_options
from .metrics import digit_accuracy, exact_match, mean_absolute_error
from .models import SEQUENCE_MODELS, build_sequence_model
from .task import (FEATURES, PAD_CHANNEL, VALUE_CHANNEL, ProgramConfig, evaluate, generate_many, program_set, render,
                   sample_batch, tokens)


class ProgramTask(Task):
    """Fresh random programs per step and seed; three fixed evaluation sets shared by all seeds."""

    input_size, output_size = FEATURES, 1
    selection_metric = "valid_rmse"
    finite_metrics = ("valid_rmse",)
    success_metric = None

    def __init__(self, config: AddConfig, kind: str):
        self.config, self.name = config, f"program-{kind}"
        self.programs = config.programs(kind)
        self._sets = None

    def sample(self, bitgens, batch_size, buffer=None):
        x, y = sample_batch(self.programs, bitgens, batch_size, value_scale=self.config.value_scale)
        return x, y, None

    def loss(self, output, y):
        mse = (output - y).pow(2).flatten(1).mean(dim=1)
        return mse.clamp_min(1e-30).sqrt() if self.config.loss == "rmse" else mse

    def split_config(self, split: str) -> ProgramConfig:
        r = SPLITS[split]
        return self.programs if r is None else self.programs.with_range(*r)

    def evaluation_sets(self, seeds=None):
        """name -> (x (1, N, T, F), exact values (1, N) int64)."""
        c = self.config
        return {name: program_set(self.split_config(name), evaluation_generator(c.evaluation_seed, i),
                                  c.evaluation_size, value_scale=c.value_scale)[::2]
                for i, name in enumerate(SPLITS)}

    @torch.no_grad()
    def predict(self, model, x, num_seeds: int, device=None) -> torch.Tensor:
        """Predictions in value units, (S, N) float64, in chunks of about 4·10⁶ input values."""
        chunk = max(1, 4_000_000 // (num_seeds * x.shape[2] * x.shape[3]))
        out = [model(x[:, i:i + chunk].to(device)).double().cpu()[..., 0] for i in range(0, x.shape[1], chunk)]
        return torch.cat(out, dim=1) / self.config.value_scale

    def evaluate(self, model, num_seeds, device=None):
        if self._sets is None:
            self._sets = self.evaluation_sets()
        metrics = {}
        for name, (x, values) in self._sets.items():
            pred = self.predict(model, x, num_seeds, device)
            err = pred - values.double()
            metrics.update({f"{name}_digits": digit_accuracy(pred, values), f"{name}_exact": exact_match(pred, values),
                            f"{name}_mae": mean_absolute_error(pred, values),
                            f"{name}_rmse": err.pow(2).mean(dim=1).sqrt()})
        return metrics


def _quantile(v: list[float], q: float) -> float:
    """The q-quantile of sorted values, linear between neighbours (an infinite neighbour gives inf)."""
    pos = q * (len(v) - 1)
    lo, frac = int(pos), pos - int(pos)
    if frac == 0:
        return v[lo]
    a, b = v[lo], v[lo + 1]
    return b if math.isinf(b) else a + (b - a) * frac


def summarize_records(records: list[dict]) -> dict:
    """Per evaluation set and metric: the median over seeds and ``_iqr`` [25 %, 75 % quantiles]; digits and exact
    as percentages. A diverged seed counts as a failure: 0 % digits and exact matches, infinite MAE and RMSE."""
    out: dict = {"seeds": len(records), "diverged": sum(1 for r in records if r.get("diverged"))}
    for split in SPLITS:
        for metric in METRICS:
            k, pct = f"{split}_{metric}", 100.0 if metric in ("digits", "exact") else 1.0
            fail = 0.0 if pct == 100.0 else math.inf
            v = sorted(fail if r.get("diverged") or r.get(k) is None or math.isnan(r[k]) else r[k] * pct
                       for r in records)
            out[k], out[f"{k}_iqr"] = ((_quantile(v, 0.5), [_quantile(v, 0.25), _quantile(v, 0.75)]) if v
                                       else (None, None))
    steps = [r["best_step"] for r in records if r.get("best_step") is not None and not r.get("diverged")]
    out["best_step_median"] = float(np.median(steps)) if steps else None
    return out


class _Programs(Experiment):
    """What program-add and program-eval share."""

    kind: str
    models = MODELS
    default_model = "lstm-nalu"
    model_help = ("ugrnn, lstm, dnc (baselines), lstm-nalu (the paper's NALU configured by an LSTM), lstm-nau, "
                  "lstm-nau-nmu (beyond the paper)")
    train_defaults = {"iterations": 3000, "batch_size": 64, "learning_rate": R.LEARNING_RATE, "eval_every": 500,
                      "seeds": 5, "grad_clip": 1.0, "regularizers": {}}
    splits = ("train",) + tuple(SPLITS)
    smoke = {"evaluation_size": 20, "hidden_size": 4, "memory_size": 4, "word_size": 4, "read_heads": 1}
    claims = (Claim(R.FITS, R.check_fits), Claim(R.ONLY_NALU, R.check_only_nalu), Claim(R.STABLE, R.check_stable))

    def task(self, config, seeds):
        return ProgramTask(config, self.kind)

    def model(self, config, model, num_seeds):
        allowed = SEQUENCE_MODELS[model][2]
        options = {k: getattr(config, k) for k in MODEL_OPTIONS if k in allowed}
        if "value_channel" in allowed:
            options["value_channel"] = VALUE_CHANNEL
        return build_sequence_model(model, FEATURES, num_seeds=num_seeds, hidden_size=config.hidden_size,
                                    pad_channel=PAD_CHANNEL, **options)

    def summarize(self, spec, result):
        return summarize_records(result.records)

    def run_name(self, config, model):
        task = {f.name: getattr(config, f.name) for f in fields(config)}
        opts = model_options(task, model)
        return f"{self.name}/{model}" + "".join(f"/{k}={v}" for k, v in sorted(opts.items()))

    def _train(self, iterations: int, seeds: int, eval_every: int, learning_rate: float = R.LEARNING_RATE
               ) -> TrainConfig:
        return TrainConfig(**dict(self.train_defaults, iterations=iterations, seeds=seeds, eval_every=eval_every,
                                  learning_rate=learning_rate))

    def cost(self, spec):
        """Seconds of one core: T tokens × (a + b·S·B) per step (:data:`programs_report.STEP_COST`, measured), and
        each evaluation about a step's cost per program row without the backward pass (a third)."""
        config, tr = spec.task_config(), spec.train
        length = R.TOKENS[self.kind] * (1 if self.kind == "add" else config.nesting)
        a, b = R.STEP_COST[spec.model]
        scale = (config.hidden_size / 32) ** 1.5
        step = length * (a + b * tr.seeds * tr.batch_size * scale)
        evaluation = length * (a + b * tr.seeds * config.evaluation_size * scale)  # 3 sets, forward only
        return tr.iterations * step + (tr.iterations // tr.eval_every + 1) * evaluation

    def grid(self, profile):
        return [RunSpec(self.name, m, task, self._train(*train))
                for m, task, train in R.GRIDS[self.kind].get(profile, ())]

    def report(self, ctx):
        return R.section(self, ctx)

    def sample(self, config, split, count, seed):
        """``count`` programs: the first of seed ``seed``'s first training batch, or of an evaluation set."""
        task = ProgramTask(config, self.kind)
        if split == "train":
            programs = generate_many(task.programs, seed_generators([seed], "data")[0], count)
        elif split in SPLITS:
            rng = evaluation_generator(config.evaluation_seed, list(SPLITS).index(split))
            programs = generate_many(task.split_config(split), rng, count)
        else:
            raise ConfigError(f"unknown split {split!r}; choose from: {', '.join(self.splits)}")
        return [{"program": render(p), "target": evaluate(p),
                 "steps": [v if t == "<num>" else t for t, v in tokens(p)], "value_scale": config.value_scale}
                for p in programs]


@register_experiment
class ProgramAdd(_Programs):
    name = "program-add"
    kind = "add"
    help = "supplementary Figure 6: adding two integers, numbers fed whole"
    description = ("Supplementary Figure 6: print((a + b)) with a, b from [0, 100), one token per step and numbers "
                   "whole in a value channel; tested on 3- and 4-digit literals. % digits correct, exact matches "
                   "and MAE per digit range.")
    Config = AddConfig


@register_experiment
class ProgramEval(_Programs):
    name = "program-eval"
    kind = "eval"
    help = "Figure 4: small programs with assignments, if-statements, + and −"
    description = ("Figure 4: Learning-to-Execute programs (nesting operations of pair, vars, ifstat by default) "
                   "with literals from [0, 100), tested on 3- and 4-digit literals; evaluated by nalm's own "
                   "interpreter, never by Python.")
    Config = EvalConfig
