"""Where the time of one seed-batched training step goes: data, forward, backward, optimiser (+ constraints).

    OMP_NUM_THREADS=1 python benchmarks/step_profile.py nau-nmu 100
"""

from __future__ import annotations

import sys
import time

import torch

from nalm.engine.metrics import per_seed_mse
from nalm.engine.task import seed_generators, torch_generators
from nalm.engine.train import DEFAULT_REGULARIZERS, Hooks, make_optimizer
from nalm.experiments.arithmetic.task import ArithmeticConfig, ArithmeticTask
from nalm.nn.models import build_model


def main(model_name: str = "nau-nmu", num_seeds: int = 100, steps: int = 500, warmup: int = 50) -> None:
    torch.set_num_threads(1)
    seeds = list(range(num_seeds))
    task = ArithmeticTask(ArithmeticConfig(operation="mul"), seeds)
    model = build_model(model_name, 100, 1, num_seeds=num_seeds)
    model.reset_parameters(torch_generators(seeds, "init"))
    optimizer = make_optimizer(model, 1e-3)
    hooks = Hooks.of(model, {k: vars(v) for k, v in DEFAULT_REGULARIZERS.items()})
    bitgens = [g.bit_generator for g in seed_generators(seeds, "data")]
    buffer, total = None, {"data": 0.0, "forward": 0.0, "backward": 0.0, "optimiser": 0.0}
    for step in range(steps + warmup):
        t0 = time.perf_counter()
        x, y, buffer = task.sample(bitgens, 128, buffer=buffer)
        t1 = time.perf_counter()
        loss = per_seed_mse(model(x), y)
        t2 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        t3 = time.perf_counter()
        optimizer.step()
        for module in hooks.constrained:
            module.post_step()
        t4 = time.perf_counter()
        if step >= warmup:
            for k, dt in zip(total, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                total[k] += dt
    ms = {k: v / steps * 1e3 for k, v in total.items()}
    print(f"{model_name}, S={num_seeds}, 1 thread: ms per step: "
          + ", ".join(f"{k} {v:.2f}" for k, v in ms.items()) + f"; total {sum(ms.values()):.2f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "nau-nmu", int(sys.argv[2]) if len(sys.argv) > 2 else 100)
