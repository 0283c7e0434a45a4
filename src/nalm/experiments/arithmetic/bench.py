"""``nalm bench throughput``: seed-iterations per second of a lean one-model loop and of the seed-batched trainer.

Both train the static arithmetic network of SPEC §3 (100 -> 2 -> 1, batch 128, Adam 1e-3, a fresh batch every
step, evaluation on the two fixed 10,000-row sets every 1000 steps):

- ``reference``: one model, one optimiser, one Python loop step per iteration, in plain idiomatic PyTorch —
  ``torch.rand`` for the batch, the single-seed units, ``F.mse_loss``, ``torch.optim.Adam`` with its defaults.
- ``batched``: nalm's trainer (:func:`nalm.engine.train.train`) with S seeds as one tensor program.

Each measurement runs in a fresh process (so its peak resident memory is its own) with the stated number of
intra-op threads; the seed-iterations per second of one process are those of one core.
"""

from __future__ import annotations

import json
import multiprocessing
import resource
import sys
import time

import torch
import torch.nn.functional as F

from nalm.engine import set_threads
from nalm.engine.train import DEFAULT_REGULARIZERS, Hooks, TrainConfig, train
from nalm.errors import ConfigError
from nalm.nn.models import build_model, parse_model

from .task import OPERATIONS, ArithmeticConfig, ArithmeticTask

TASK = ArithmeticConfig(operation="mul")  # SPEC §3 defaults: 100 inputs, U[1, 2] -> U[2, 6]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def reference_loop(model_name: str, steps: int, seed: int = 0, eval_every: int = 1000) -> float:
    """Train one model for ``steps`` steps the usual way; returns iterations per second."""
    task = ArithmeticTask(TASK, [seed])
    torch.manual_seed(seed)
    model = build_model(model_name, TASK.input_size, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    hooks = Hooks.of(model, {k: vars(v) for k, v in DEFAULT_REGULARIZERS.items()})
    masks = task._masks[0].T.contiguous()  # (in, 2)
    op = OPERATIONS[TASK.operation][0]
    sets = [(x[0], y[0]) for x, y in task.evaluation_sets().values()]
    generator = torch.Generator().manual_seed(seed)
    low, high = task.interpolation.low, task.interpolation.high
    start = time.perf_counter()
    for step in range(1, steps + 1):
        x = torch.rand(128, TASK.input_size, generator=generator) * (high - low) + low
        ab = x @ masks
        loss = F.mse_loss(model(x), op(ab[:, :1], ab[:, 1:]))
        for module, schedule in hooks.regularized:
            if lam := schedule(step):
                loss = loss + lam * module.regularization_loss()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        for module in hooks.constrained:
            module.post_step()
        if step % eval_every == 0:
            with torch.no_grad():
                [F.mse_loss(model(x), y) for x, y in sets]
    return steps / (time.perf_counter() - start)


def batched_loop(model_name: str, seeds: int, steps: int, eval_every: int = 1000, device: str = "cpu") -> float:
    """Train ``seeds`` seeds with nalm's trainer for ``steps`` steps on ``device``; returns seed-iterations per
    second."""
    from nalm.engine import resolve_device

    config = TrainConfig(iterations=steps, seeds=seeds, eval_every=eval_every)
    task = ArithmeticTask(TASK, config.seed_ids)
    model = build_model(model_name, TASK.input_size, 1, num_seeds=seeds)
    start = time.perf_counter()
    train(model, task, config, device=resolve_device(device))
    return seeds * steps / (time.perf_counter() - start)


def _measure(mode: str, model: str, seeds: int, steps: int, threads: int, device: str = "cpu") -> dict:
    set_threads(threads)
    if mode == "reference":
        rate = reference_loop(model, steps)
    else:
        rate = batched_loop(model, seeds, steps, device=device)
    return {"mode": mode, "model": model, "seeds": seeds, "processes": 1, "threads": threads,
            "seed_iterations_per_s": round(rate, 1), "peak_rss_mb": round(_peak_rss_mb(), 1)}


def throughput(models: list[str], seed_counts: list[int], steps: int, threads: int = 1,
               repeat: int = 1, device: str = "cpu") -> list[dict]:
    """One reference and one batched row per model and seed count, each the fastest of ``repeat`` measurements.

    The batched rows train on ``device``; the reference loop always runs on the CPU (it is the usual way).

    Every measurement runs in a fresh process. The repeats go round the rows of a model in turn (reference,
    S₁, S₂, ..., then again), so that a slow spell of a shared machine does not fall on one row alone.
    """
    for m in models:
        parse_model(m)
    ctx = multiprocessing.get_context("spawn")
    rows = []
    with ctx.Pool(1, maxtasksperchild=1) as pool:
        for model in models:
            jobs = [("reference", 1)] + [("batched", s) for s in seed_counts]
            runs: dict[tuple, list[dict]] = {job: [] for job in jobs}
            for _ in range(repeat):
                for mode, s in jobs:
                    # Fewer steps above 100 seeds keep a row of the largest batches to about a minute.
                    n = steps if mode == "reference" or s <= 100 else max(1000, steps * 100 // s)
                    runs[(mode, s)].append(pool.apply(_measure, (mode, model, s, n, threads, device)))
            for mode, s in jobs:
                measured = runs[(mode, s)]
                row = {**max(measured, key=lambda r: r["seed_iterations_per_s"]),
                       "peak_rss_mb": max(r["peak_rss_mb"] for r in measured)}
                rows.append(row)
                print(f"  {mode:9s} {model:10s} seeds={s:5d} {row['seed_iterations_per_s']:10.0f} seed-it/s "
                      f"peak {row['peak_rss_mb']:7.1f} MB", file=sys.stderr)
    return rows


def throughput_cli(args) -> int:
    try:
        seed_counts = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        raise ConfigError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    if any(s < 1 for s in seed_counts) or min(args.steps, args.threads, args.repeat) < 1:
        raise ConfigError("--seeds, --steps, --threads and --repeat must be positive")
    models = [m for m in args.units.split(",") if m]
    from nalm.engine import resolve_device

    resolve_device(args.device)  # a device that is not there: exit 2 before any process starts
    rows = throughput(models, seed_counts, args.steps, args.threads, args.repeat, args.device)
    if args.json:
        print(json.dumps(rows))
        return 0
    ref = {r["model"]: r["seed_iterations_per_s"] for r in rows if r["mode"] == "reference"}
    print(f"{'mode':9s} {'model':10s} {'seeds':>6s} {'proc':>4s} {'thr':>3s} {'seed-it/s':>11s} "
          f"{'× ref':>6s} {'peak MB':>8s}")
    for r in rows:
        speedup = r["seed_iterations_per_s"] / ref[r["model"]]
        print(f"{r['mode']:9s} {r['model']:10s} {r['seeds']:6d} {r['processes']:4d} {r['threads']:3d} "
              f"{r['seed_iterations_per_s']:11.0f} {speedup:6.1f} {r['peak_rss_mb']:8.1f}")
    return 0
