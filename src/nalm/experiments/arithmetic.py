"""Table 1 of Trask et al. (2018, §4.1): simple function learning, static and recurrent, with the success rates of
Madsen & Johansen (2020) beside the paper's normalised error. Two experiments: ``arithmetic`` and
``arithmetic-recurrent`` (the data: :mod:`nalm.tasks.arithmetic`; the report: :mod:`.arithmetic_report`).
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from ..metrics import success_threshold, summarize
from ..models import RECURRENT_BASELINES, build_model, parse_model
from ..tasks.arithmetic import (OPERATIONS, ArithmeticConfig, ArithmeticTask, RecurrentArithmeticConfig)
from ..tasks.base import seed_generators
from ..train import DEFAULT_REGULARIZERS, Regularizer, TrainConfig
from . import arithmetic_report
from .base import NOT_REPRODUCED, NOT_RUN, REPRODUCED, Claim, Experiment, RunSpec, Verdict, register_experiment

#: Table 1's static models: the paper's (MLP ReLU6, linear, NAC, NALU) and the successors (NAC•, NAU, NMU).
STATIC_MODELS = ("relu6", "linear", "nac-nac", "nac-nac_mul", "nalu-nalu", "nau-nau", "nau-nmu")
RECURRENT_MODELS = ("lstm", "rnn-tanh", "rnn-relu", "nac-nac", "nalu-nalu", "nau-nmu")
#: The classic recurrent cells need more than 2 hidden units to fit anything; the arithmetic units do not.
RECURRENT_BASELINE_HIDDEN = 16


def _regs(**overrides: Regularizer) -> dict:
    return {k: asdict(v) for k, v in {**DEFAULT_REGULARIZERS, **overrides}.items()}


def _extrapolates(models: tuple[str, ...], ops: tuple[str, ...], claim_ops_text: str, solved: bool):
    """A claim check: the models' median normalised extrapolation error is < 1 (``solved``) or > 10 (fails) on
    every operation in ``ops``, in the largest-scale run of each (model, operation)."""

    def check(ctx) -> Verdict:
        best = arithmetic_report.strongest(ctx.runs)
        found, bad = [], []
        for m in models:
            for op in ops:
                r = best.get((m, op))
                if r is None:
                    continue
                v = (r["summary"] or {}).get("normalized_extrapolation_error")
                v = float("inf") if v is None else v
                found.append(f"{m} {arithmetic_report.OP_LABELS[op]}: {arithmetic_report.score(v)}")
                if (v < 1) != solved or (not solved and v <= 10):
                    bad.append(found[-1])
        if not found:
            return Verdict(NOT_RUN, f"no finished run of {', '.join(models)} on {claim_ops_text}")
        text = "normalised extrapolation error (median over seeds): " + "; ".join(found)
        return Verdict(NOT_REPRODUCED if bad else REPRODUCED, text)

    return check


@register_experiment
class Arithmetic(Experiment):
    name = "arithmetic"
    help = "static arithmetic (Table 1, static; SPEC §3)"
    description = ("Table 1, static: a and b are sums of two overlapping subsets of the input, the target op(a, b); "
                   "train on U[1, 2], test on U[2, 6] (Madsen & Johansen's dataset). Reports the normalised error "
                   "and the success rate with its Wilson interval.")
    Config = ArithmeticConfig
    models = STATIC_MODELS
    default_model = "nau-nmu"
    model_help = ("UNIT-UNIT (e.g. nau-nmu, nalu-nalu, nac-nac_mul) or an MLP baseline: relu6, relu, tanh, sigmoid, "
                  "softsign, selu, elu, linear")
    protocol = 2  # 2: training data and evaluation sets from SFC64 streams (1: PCG64)
    splits = ("train", "interpolation", "extrapolation")
    recurrent = False
    smoke = {"input_size": 10, "evaluation_size": 100}
    claims = (
        Claim("The NAC learns a + b and a − b and extrapolates them (normalised extrapolation error < 1).",
              _extrapolates(("nac-nac",), ("add", "sub"), "a + b, a − b", True)),
        Claim("The NALU extrapolates every operation but division: a + b, a − b, a × b, a², √a (error < 1).",
              _extrapolates(("nalu-nalu",), ("add", "sub", "mul", "squared", "root"), "those operations", True)),
        Claim("MLPs fail to extrapolate: the ReLU6 MLP's normalised extrapolation error is > 10 on a × b and a².",
              _extrapolates(("relu6",), ("mul", "squared"), "a × b, a²", False)),
    )

    def check_model(self, model: str) -> None:
        parse_model(model, self.recurrent)

    def threshold(self, config) -> float:
        """The success threshold (Monte Carlo, cached in memory). The recurrent one needs sums over long sequences:
        fewer samples keep it to seconds."""
        return success_threshold(config, recurrent=self.recurrent, samples=100_000 if self.recurrent else 1_000_000)

    def task(self, config, seeds):
        task = ArithmeticTask(config, seeds, recurrent=self.recurrent)
        task.threshold = self.threshold(config)
        return task

    def model(self, config, model, num_seeds):
        return build_model(model, config.input_size, 1, hidden_size=config.hidden_size, num_seeds=num_seeds,
                           recurrent=self.recurrent)

    def summarize(self, spec, result):
        return {**summarize(result.records), "threshold": self.threshold(spec.task_config())}

    def run_name(self, config, model):
        return f"{self.name}/{model}/{config.operation}"

    def grid(self, profile):
        if profile == "quick":
            # The paper-scale ramps start after 5·10³ (NAU) and 10⁶ (NMU) steps; compress them into the short run.
            train = TrainConfig(iterations=10_000, seeds=10,
                                regularizers=_regs(nau=Regularizer(0.01, 2_000, 6_000),
                                                   nmu=Regularizer(10.0, 4_000, 8_000)))
        elif profile == "paper":
            train = TrainConfig(iterations=5_000_000, seeds=100, regularizers=_regs())
        else:
            return self.acceptance()
        specs = [RunSpec(self.name, m, {"operation": op}, train) for op in OPERATIONS for m in STATIC_MODELS]
        return specs + (self.acceptance() if profile == "paper" else [])

    def acceptance(self) -> list[RunSpec]:
        """The acceptance runs of the arithmetic benchmark: 100 seeds, 50,000 iterations each."""
        nau = TrainConfig(iterations=50_000, seeds=100)
        # NMU within 5·10⁴ steps: the sparsity ramps must fit inside the run (ours; SPEC §3's start at 10⁶).
        nmu = TrainConfig(iterations=50_000, seeds=100, regularizers=_regs(nau=Regularizer(0.01, 5_000, 20_000),
                                                                          nmu=Regularizer(10.0, 20_000, 35_000)))
        return [RunSpec(self.name, "nau-nau", {"operation": "add"}, nau),
                RunSpec(self.name, "nau-nau", {"operation": "sub"}, nau),
                RunSpec(self.name, "nau-nmu", {"operation": "mul", "input_size": 4, "subsets": "0:2,0:4"}, nmu),
                RunSpec(self.name, "nau-nmu", {"operation": "mul"}, nmu)]

    def cost(self, spec):
        c = spec.task_config()
        per_step = 4e-4 + 2e-6 * spec.train.seeds * c.input_size * c.train_length
        return spec.train.iterations * per_step

    def report(self, ctx):
        return arithmetic_report.section(self, ctx)

    def sample(self, config, split, count, seed):
        """``count`` examples of seed ``seed``'s data: the inputs, a, b and the target (subsets are per seed)."""
        task = ArithmeticTask(config, [seed], recurrent=self.recurrent)
        if split == "train":
            bitgens = [g.bit_generator for g in seed_generators([seed], "data")]
            x, y, _ = task.sample(bitgens, count)
        else:
            x, _ = task.evaluation_sets()[split]
            x = x[:, :count]
            y = task.targets(x)
        masks = task._masks[0]
        xs = x[0].sum(dim=-2) if self.recurrent else x[0]
        ab = xs.double() @ masks.double().T
        spans = ",".join(f"{int(np.flatnonzero(m)[0])}:{int(np.flatnonzero(m)[-1]) + 1}" for m in masks.numpy())
        return [{"x": np.round(x[0, i].numpy(), 4).tolist(), "a": float(ab[i, 0]), "b": float(ab[i, 1]),
                 "target": float(y[0, i, 0]), "subsets": spans} for i in range(x.shape[1])]


@register_experiment
class RecurrentArithmetic(Arithmetic):
    name = "arithmetic-recurrent"
    help = "recurrent arithmetic (Table 1, recurrent)"
    description = ("Table 1, recurrent (our definition; the paper gives none): input_size inputs per time step, a and "
                   "b summed over the whole sequence; train on train_length steps, test on test_length steps, so a, "
                   "b and the target grow far beyond the training range.")
    Config = RecurrentArithmeticConfig
    models = RECURRENT_MODELS
    model_help = "UNIT-UNIT (the first unit's recurrent cell, then the second unit) or lstm, gru, rnn-tanh, rnn-relu"
    recurrent = True
    smoke = {"evaluation_size": 50, "test_length": 20}
    claims = (
        Claim("The NAC cell learns recurrent a + b and a − b and extrapolates to longer sequences (error < 1).",
              _extrapolates(("nac-nac",), ("add", "sub"), "a + b, a − b", True)),
        Claim("The NALU cell extrapolates every operation but division (normalised extrapolation error < 1).",
              _extrapolates(("nalu-nalu",), ("add", "sub", "mul", "squared", "root"), "those operations", True)),
        Claim("LSTMs and RNNs fail to extrapolate (normalised extrapolation error > 10 on a + b and a − b).",
              _extrapolates(("lstm", "rnn-tanh", "rnn-relu"), ("add", "sub"), "a + b, a − b", False)),
    )

    def grid(self, profile):
        if profile == "quick":
            train = TrainConfig(iterations=3_000, seeds=10, regularizers=_regs(
                nau=Regularizer(0.01, 1_000, 2_000), nmu=Regularizer(10.0, 1_500, 2_500)))
            size = 1_000
        elif profile == "paper":
            train, size = TrainConfig(iterations=500_000, seeds=100, regularizers=_regs()), 10_000
        else:
            return []
        return [RunSpec(self.name, m, {"operation": op, "evaluation_size": size,
                                       "hidden_size": RECURRENT_BASELINE_HIDDEN if m in RECURRENT_BASELINES else 2},
                        train) for op in OPERATIONS for m in RECURRENT_MODELS]
