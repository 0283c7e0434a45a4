"""``nalm bench single-module``: seed-iterations per second of the single-module benchmark, three ways, per unit.

- ``all-ranges``: one configuration, the nine ranges × ``seeds`` slots on one seed axis (S = 225 at 25 seeds): how
  the profiles run it.
- ``per-range``: the nine ranges one after another, ``seeds`` slots each (a configuration per range).
- ``reference``: one model, one seed, in plain idiomatic PyTorch (``torch.rand`` batches, the single-seed unit,
  ``F.mse_loss``, ``torch.optim.Adam``), on range 6 (U[1, 2)).

All train for ``steps`` steps at batch 128 with the Primer's learning rate and evaluation every 1,000 steps (and at
the end) on 10,000-row validation and test sets; timed with ``time.perf_counter`` in this process, the sets' and
thresholds' construction left out. Seed-iterations per second of one process are those of one core at one thread.
"""

from __future__ import annotations

import json
import sys
import time

import torch
import torch.nn.functional as F

from nalm.engine.ranges import Range
from nalm.engine.runner import set_threads
from nalm.engine.train import Hooks, train
from nalm.errors import ConfigError
from nalm.units import get_unit

from .experiment import UNIT_OPTIONS, train_config
from .task import RANGES, SingleModuleConfig, SingleModuleTask, stream_id


def _batched(unit: str, ranges: tuple[int, ...], seeds: int, steps: int, config: SingleModuleConfig) -> float:
    """Seconds to train ``seeds`` slots on each of ``ranges`` as one seed axis."""
    tc = train_config(unit, config.operation, steps, seeds, eval_every=1000)
    slots = [(r, s) for r in ranges for s in tc.seed_ids]
    task = SingleModuleTask(config, slots)
    task._sets = task.evaluation_sets()
    model = get_unit(unit, config.input_size, 1, num_seeds=len(slots))
    start = time.perf_counter()
    train(model, task, tc, seeds=[stream_id(r, s) for r, s in slots])
    return time.perf_counter() - start


def _reference(unit: str, steps: int, config: SingleModuleConfig, range_index: int = 6) -> float:
    """Seconds to train one model of ``unit`` for ``steps`` steps the usual way."""
    tc = train_config(unit, config.operation, steps, 1)
    task = SingleModuleTask(config, [(range_index, 0)])
    sets = [(x[0], y[0]) for x, y in task.evaluation_sets().values()]
    (lo, hi), = Range.parse(RANGES[range_index][0]).intervals
    torch.manual_seed(0)
    model = get_unit(unit, config.input_size, 1, **UNIT_OPTIONS.get(unit, {}))
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.learning_rate)
    hooks = Hooks.of(model, tc.regularizers)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        x = torch.rand(128, config.input_size) * (hi - lo) + lo
        loss = F.mse_loss(model(x), task.targets(x))
        for module, schedule in hooks.regularized:
            if lam := schedule(step):
                loss = loss + lam * module.regularization_loss()
        optimizer.zero_grad()
        loss.backward()
        if tc.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        if tc.grad_clip_value is not None:
            torch.nn.utils.clip_grad_value_(model.parameters(), tc.grad_clip_value)
        optimizer.step()
        for module in hooks.constrained:
            module.post_step()
        if step % 1000 == 0 or step == steps:
            with torch.no_grad():
                [F.mse_loss(model(x), y) for x, y in sets]
    return time.perf_counter() - start


def bench(units: list[str], seeds: int, steps: int, operation: str = "mul", threads: int = 1) -> list[dict]:
    """Per unit: seed-iterations per second of all nine ranges at once (S = 9 · seeds), of one range at a time, and
    of the one-model loop."""
    set_threads(threads)
    config = SingleModuleConfig(operation=operation)
    everything = tuple(range(len(RANGES)))
    rows = []
    for unit in units:
        get_unit(unit, 2, 1)  # an unknown unit: a ConfigError before anything is timed
        slots = len(everything) * seeds
        timed = {"all-ranges": (slots, _batched(unit, everything, seeds, steps, config)),
                 "per-range": (slots, sum(_batched(unit, (r,), seeds, steps, config) for r in everything)),
                 "reference": (1, _reference(unit, steps, config))}
        for mode, (s, seconds) in timed.items():
            rows.append({"mode": mode, "unit": unit, "operation": operation, "seeds": s, "steps": steps,
                         "threads": threads, "seconds": round(seconds, 3),
                         "seed_iterations_per_s": round(s * steps / seconds, 1)})
            print(f"  {mode:10s} {unit:8s} S={s:4d} {rows[-1]['seed_iterations_per_s']:10.0f} seed-it/s",
                  file=sys.stderr)
    return rows


def bench_cli(args) -> int:
    if min(args.seeds, args.steps, args.threads) < 1:
        raise ConfigError("--seeds, --steps and --threads must be positive")
    rows = bench([u for u in args.units.split(",") if u], args.seeds, args.steps, args.op, args.threads)
    if args.json:
        print(json.dumps(rows))
        return 0
    ref = {r["unit"]: r["seed_iterations_per_s"] for r in rows if r["mode"] == "reference"}
    print(f"{'mode':10s} {'unit':8s} {'S':>4s} {'seed-it/s':>11s} {'× ref':>6s} {'s per 1000 steps':>17s}")
    for r in rows:
        print(f"{r['mode']:10s} {r['unit']:8s} {r['seeds']:4d} {r['seed_iterations_per_s']:11.0f} "
              f"{r['seed_iterations_per_s'] / ref[r['unit']]:6.1f} {1000 * r['seconds'] / r['steps']:17.2f}")
    return 0
