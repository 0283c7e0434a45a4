"""``nalm bench mnist``: images per second of the MNIST sequence experiments (Table 2) — one training step of the
seed-batched trainer (the task's batch of S seeds + forward + backward + Adam + the cell's constraints), and one
evaluation.

Rows per digit net (``small``, ``mnist2018``), with an NAU cell over the conv net's outputs (the core costs little
next to the conv net), sum target, ``batch`` sequences of 10 images per seed:

- ``trainer S=1``: the seed-batched trainer with one seed (``nalm.nn.ensemble.Ensemble``, what ``nalm run`` builds);
- ``trainer S=10, Ensemble loop`` / ``Ensemble vmap`` / ``SeedLoop``: ten seeds in one model, the conv net's seed
  axis from ``Ensemble(mode="loop")`` (the default: ``mode="auto"``), ``Ensemble(mode="vmap")``, or the plain
  :class:`nalm.experiments.mnist.nets.SeedLoop`;
- ``one-model loop, 10 models``: ten S = 1 models, each with its own batch and Adam, stepped in turn;
- ``evaluation``: ``MnistSequenceTask.evaluate`` (each pool image through the conv net once, the core over 100
  sequences of each test length 1, 10, 100, 1000 and the validation set), per seed.

Images per second = sequences × length × seeds per step ÷ CPU seconds per step (the fastest of ``repeat`` timings
of ``steps`` steps after one warm-up step; CPU time of the one-threaded process, not wall time, because a shared
machine's wall time measures the others' load). Synthetic images (``nalm.experiments.mnist.data.synthetic_mnist``): the cost
does not depend on the pixels.

    OMP_NUM_THREADS=1 nalm bench mnist [--nets small,mnist2018] [--batch 16] [--steps 3] [--repeat 2] [--json]
"""

from __future__ import annotations

import json
import time

import torch

from nalm.engine import set_threads
from nalm.engine.task import seed_generators, torch_generators
from nalm.engine.train import Hooks, make_optimizer, training_step
from nalm.errors import ConfigError
from nalm.nn.ensemble import Ensemble

from .data import synthetic_mnist
from .nets import DIGIT_NETS, SeedLoop, build_sequence_model
from .sequences import MnistSequenceConfig, MnistSequenceTask

ENSEMBLES = {"Ensemble loop": lambda f, s: Ensemble(f, s, mode="loop"),
             "Ensemble vmap": lambda f, s: Ensemble(f, s, mode="vmap"),
             "SeedLoop": lambda f, s: SeedLoop(f, s)}


def setup(net: str, seeds: list[int], ensemble, mnist, config):
    task = MnistSequenceTask(config, seeds, mnist)
    model = build_sequence_model("nau", 1, num_seeds=len(seeds), digit_net=net, core_learning_rate=1e-2,
                                 ensemble=ensemble)
    model.reset_parameters(torch_generators(seeds, "init"))
    opt = make_optimizer(model, 1e-3)
    bitgens = [g.bit_generator for g in seed_generators(seeds, "data")]
    alive = torch.ones(len(seeds), dtype=torch.bool)
    hooks = Hooks.of(model, {})
    state = {"step": 0, "buffer": None}

    def step(batch):
        state["step"] += 1
        x, y, state["buffer"] = task.batch(state["step"], bitgens, batch, state["buffer"])
        training_step(model, opt, x, y, state["step"], hooks, alive, task.loss)

    return task, model, step


def timed(fn, steps: int, repeat: int) -> float:
    """CPU seconds of this process per call of ``fn`` (``time.process_time``: on a machine shared with other work,
    wall time measures the others' load): the fastest of ``repeat`` timings of ``steps`` calls, after a warm-up."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        for _ in range(steps):
            fn()
        best = min(best, (time.process_time() - t0) / steps)
    return best


def mnist_rows(nets, batch: int = 16, steps: int = 3, repeat: int = 2, pool: tuple[int, int] = (6000, 1000)
               ) -> list[dict]:
    """The benchmark's rows: {"net", "batching", "images_per_cpu_s", "cpu_ms_per_step"} for each net of ``nets``;
    ``pool``: the synthetic train and test image counts."""
    if min(batch, steps, repeat) < 1:
        raise ConfigError("--batch, --steps and --repeat must be positive")
    unknown = [n for n in nets if n not in DIGIT_NETS]
    if unknown:
        raise ConfigError(f"unknown digit net(s) {unknown}; choose from: {', '.join(DIGIT_NETS)}")
    set_threads(1)
    mnist = synthetic_mnist(*pool)
    held_out = min(1000, pool[0] // 2)
    config = MnistSequenceConfig(validation=held_out, validation_sequences=100, test_sequences=100)
    per_step = batch * config.train_length
    out = []
    for net in nets:
        rows = []
        _, _, step = setup(net, [0], ENSEMBLES["Ensemble loop"], mnist, config)
        rows.append(("trainer S=1", per_step, timed(lambda: step(batch), steps, repeat)))
        for label, ensemble in ENSEMBLES.items():
            _, _, step = setup(net, list(range(10)), ensemble, mnist, config)
            rows.append((f"trainer S=10, {label}", 10 * per_step, timed(lambda: step(batch), steps, repeat)))
        singles = [setup(net, [s], ENSEMBLES["Ensemble loop"], mnist, config)[2] for s in range(10)]
        rows.append(("one-model loop, 10 models", 10 * per_step,
                     timed(lambda: [f(batch) for f in singles], max(1, steps // 3), repeat)))
        task, model, _ = setup(net, [0], ENSEMBLES["Ensemble loop"], mnist, config)
        model.eval()
        rows.append(("evaluation, S=1 (forward of each pool image)", held_out + len(mnist.test_labels),
                     timed(lambda: task.evaluate(model, 1), 1, repeat)))
        out += [{"net": net, "batching": label, "images_per_cpu_s": images / seconds,
                 "cpu_ms_per_step": 1000 * seconds} for label, images, seconds in rows]
    return out


def mnist_cli(args) -> int:
    nets = [n for n in args.nets.split(",") if n]
    rows = mnist_rows(nets, args.batch, args.steps, args.repeat)
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"torch {torch.__version__}, 1 thread; batch {args.batch} × 10 images per seed")
    print("| net | batching | images per CPU-second | CPU ms per step |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['net']} | {r['batching']} | {r['images_per_cpu_s']:,.0f} | {r['cpu_ms_per_step']:,.0f} |")
    return 0
