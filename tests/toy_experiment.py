"""A toy experiment registered from the test suite (not part of nalm): y = x1 + x2 learned from a fixed data set.

Importing this module registers it; the tests check that it then appears in ``nalm run``, ``nalm sample``,
``nalm reproduce --only`` and the report without any other file naming it. With ``TOY_LOG`` set, every training
start appends "pid name" to that file (the lease test counts them); ``TOY_SLEEP`` seconds of sleep make a run last.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from nalm import get_unit
from nalm.engine import (NOT_REPRODUCED, REPRODUCED, Claim, Experiment, RunSpec, Task, TrainConfig, Verdict,
                         get_experiment, register_experiment)
from nalm.engine.metrics import evaluate
from nalm.engine.task import evaluation_generator, seed_order


@dataclass(frozen=True)
class ToyConfig:
    size: int = field(default=64, metadata={"help": "rows of the fixed training set"})
    test_low: float = field(default=1.0, metadata={"help": "lower end of the test range"})


class ToyTask(Task):
    selection_metric = "train_mse"
    finite_metrics = ("train_mse",)
    success_metric = "test_mse"
    threshold = 1e-4

    def __init__(self, config: ToyConfig, seeds):
        self.seeds = list(seeds)
        rng = evaluation_generator(0, 0)
        self.x = torch.from_numpy(rng.random((config.size, 2), dtype=np.float32))
        self.x_test = torch.from_numpy(rng.random((200, 2), dtype=np.float32) * 2 + config.test_low)

    def batch(self, step, bitgens, batch_size, buffer=None):
        idx = torch.from_numpy(seed_order(self.seeds, step, batch_size, len(self.x)))  # (S, B)
        x = self.x[idx]
        return x, x.sum(-1, keepdim=True), None

    def evaluate(self, model, num_seeds, device=None):
        return {name: evaluate(model, x[None], x.sum(-1, keepdim=True)[None], num_seeds)
                for name, x in (("train_mse", self.x), ("test_mse", self.x_test))}


def _nau_extrapolates(ctx) -> Verdict:
    runs = [r for r in ctx.runs if r["config"]["model"] == "nau"]
    if not runs:
        return Verdict("not run", "no nau run")
    rate = runs[-1]["summary"]["success_rate"]
    return Verdict(REPRODUCED if rate >= 0.5 else NOT_REPRODUCED, f"nau success rate {rate:.2f}")


@register_experiment
class Toy(Experiment):
    name = "toy-sum"
    help = "a toy: y = x1 + x2 from a fixed data set (registered by the tests)"
    Config = ToyConfig
    models = ("linear", "nau", "nac")
    default_model = "nau"
    train_defaults = {"iterations": 200, "learning_rate": 0.05, "batch_size": 16, "eval_every": 50,
                      "regularizers": {}}
    splits = ("train", "test")
    claims = (Claim("The NAU extrapolates the sum.", _nau_extrapolates),)

    def task(self, config, seeds):
        return ToyTask(config, seeds)

    def run_name(self, config, model):
        return f"{self.name}/{model}/{config.size}"

    def model(self, config, model, num_seeds):
        return get_unit(model, 2, 1, num_seeds=num_seeds)

    def train(self, spec, **kwargs):
        if os.environ.get("TOY_LOG"):
            with open(os.environ["TOY_LOG"], "a") as f:
                f.write(f"{os.getpid()} {spec.name}\n")
        time.sleep(float(os.environ.get("TOY_SLEEP", "0")))
        return super().train(spec, **kwargs)

    def grid(self, profile):
        if profile != "quick":
            return []
        train = TrainConfig(iterations=100, seeds=2, learning_rate=0.05, batch_size=16, eval_every=50,
                            regularizers={})
        return [RunSpec(self.name, m, {"size": n}, train) for m in self.models for n in (32, 64)]

    def report(self, ctx):
        return ["## Toy sum", "", *(f"- {r['name']}: success {r['summary']['success_rate']}" for r in ctx.runs), ""]

    def sample(self, config, split, count, seed):
        task = ToyTask(config, [seed])
        x = task.x if split == "train" else task.x_test
        return [{"x": x[i].tolist(), "target": float(x[i].sum())} for i in range(count)]


assert get_experiment("toy-sum")
