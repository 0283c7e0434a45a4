"""A3C: asynchronous advantage actor-critic with Hogwild updates (Mnih et al. 2016, Algorithm S3), the paper's
algorithm for the grid-world agents (Trask et al. 2018, §4.5).

One agent (S = 1) lives in shared memory together with the optimiser's state (Adam by default, or RMSProp: the
"shared RMSProp" of Mnih et al., whose statistics are shared, not per worker). Each of ``workers`` processes owns a
local copy of the agent and a small :class:`~nalm.experiments.gridworld.vector.TimeGridVectorEnv` (``A2CConfig.num_envs`` episodes)
and loops: copy the shared parameters into the local agent, roll out ``n_steps`` steps, compute the A2C loss
gradient locally (:meth:`nalm.experiments.gridworld.a2c.A2C.compute_gradients`, clipped), hand the gradient to the shared parameters
and step the shared optimiser, without locks (Hogwild, Recht et al. 2011). Each worker runs one thread.

Runs are not reproducible step for step (the interleaving of the workers decides what each one reads), and the
grid world's seed axis is not used: an A3C run trains one seed. On this 2-core machine A2C (:mod:`nalm.experiments.gridworld.a2c`)
is the faster way to train many seeds; A3C is the paper-faithful option.
"""

from __future__ import annotations

import copy
import multiprocessing
import queue as queue_module
import time
from collections.abc import Callable

import numpy as np
import torch

from nalm.engine import set_threads
from nalm.errors import ConfigError

from .a2c import A2C, A2CConfig, make_optimizer
from .agents import ActorCritic
from .env import TimeGridConfig


def shared_optimizer(params, config: A2CConfig, state: dict | None = None) -> torch.optim.Optimizer:
    """The optimiser of ``config`` (Adam or RMSProp; SGD keeps no state) whose statistics and step counts live in
    shared memory, created now (before any step) or loaded from ``state`` (an earlier ``state_dict()``)."""
    params = list(params)
    optimizer = make_optimizer(params, config)
    optimizer.defaults["foreach"] = False
    for group in optimizer.param_groups:
        group["foreach"] = False  # one tensor at a time: the workers write the shared statistics in place
    if state is not None:
        optimizer.load_state_dict(state)
    else:
        for p in params:
            if config.optimizer == "adam":
                optimizer.state[p].update(step=torch.zeros(()), exp_avg=torch.zeros_like(p),
                                          exp_avg_sq=torch.zeros_like(p))
            elif config.optimizer == "rmsprop":
                optimizer.state[p].update(step=torch.zeros(()), square_avg=torch.zeros_like(p))
    for p in params:
        for t in optimizer.state[p].values():
            if isinstance(t, torch.Tensor):
                t.share_memory_()
    return optimizer


def _streams(seed: int, rank: int, round_: int) -> tuple[int, np.random.Generator]:
    """(first episode-slot seed, action generator) of worker ``rank`` in training round ``round_`` of ``seed``."""
    base = np.random.Generator(np.random.SFC64([seed, rank, round_, 0xA3C]))
    return int(base.integers(0, 2**62)), np.random.Generator(np.random.SFC64(base.integers(0, 2**62, 4)))


def _worker(rank: int, agent: ActorCritic, optimizer: torch.optim.Optimizer, env_config: TimeGridConfig,
            config: A2CConfig, seed: int, updates: int, round_: int, results) -> None:
    set_threads(1)
    local = copy.deepcopy(agent)
    trainer = A2C(local, env_config, config, seeds=[seed])
    # Each worker plays its own episodes and samples its own actions: streams named by (seed, rank, round).
    first, actions = _streams(seed, rank, round_)
    trainer.obs, _ = trainer.env.reset(seed=first)
    trainer.rngs = [actions]
    try:
        for _ in range(updates):
            local.load_state_dict(agent.state_dict())
            row = trainer.compute_gradients()
            for shared, own in zip(agent.parameters(), local.parameters()):
                shared.grad = own.grad
            optimizer.step()
            results.put((rank, row))
    finally:
        results.put((rank, None))


def train_a3c(agent: ActorCritic, env_config: TimeGridConfig, config: A2CConfig | None = None, *, seed: int = 0,
              workers: int = 2, updates: int = 100, start_method: str | None = None,
              callback: Callable[[int, dict], None] | None = None, optimizer: torch.optim.Optimizer | None = None,
              round_: int = 0) -> dict[str, list]:
    """Train ``agent`` (num_seeds = 1) in place with ``workers`` Hogwild processes of ``updates`` updates each.

    A long run may be cut into rounds (to checkpoint between them): pass the same ``agent`` and the shared
    ``optimizer`` (:func:`shared_optimizer`, made on the first round) again with the next ``round_``, which picks
    fresh episodes and action streams for the workers.

    Returns the curves as plain lists, one entry per worker update in arrival order: ``worker``, ``seconds`` and
    the per-update metrics of :meth:`nalm.experiments.gridworld.a2c.A2C.update` (each a list of one value, the seed axis of S = 1).
    ``start_method``: "fork" (default where available: fast, the workers inherit the shared tensors) or "spawn".
    """
    config = config or A2CConfig()
    if agent.num_seeds != 1:
        raise ConfigError(f"train_a3c trains one seed; got an agent with num_seeds={agent.num_seeds}")
    for name, value in (("workers", workers), ("updates", updates)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"train_a3c: {name} must be a positive integer, got {value!r}")
    methods = multiprocessing.get_all_start_methods()
    start_method = start_method or ("fork" if "fork" in methods else "spawn")
    if start_method not in methods:
        raise ConfigError(f"train_a3c: start_method must be one of {methods}, got {start_method!r}")
    ctx = torch.multiprocessing.get_context(start_method)
    agent.share_memory()
    optimizer = optimizer if optimizer is not None else shared_optimizer(agent.parameters(), config)
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, daemon=True,
                         args=(rank, agent, optimizer, env_config, config, seed, updates, round_, results))
             for rank in range(workers)]
    start = time.perf_counter()
    for p in procs:
        p.start()
    curves: dict[str, list] = {"worker": [], "seconds": []}
    running = workers
    try:
        while running:
            try:
                rank, row = results.get(timeout=5.0)
            except queue_module.Empty:
                if not any(p.is_alive() for p in procs):
                    raise RuntimeError("train_a3c: every worker died without reporting its end") from None
                continue
            if row is None:
                running -= 1
                continue
            curves["worker"].append(rank)
            curves["seconds"].append(time.perf_counter() - start)
            for name, value in row.items():
                curves.setdefault(name, []).append(value)
            if callback is not None:
                callback(len(curves["worker"]), row)
    finally:
        for p in procs:
            p.join(timeout=10.0)
            if p.is_alive():
                p.terminate()
    failed = [p.exitcode for p in procs if p.exitcode]
    if failed or len(curves["worker"]) != workers * updates:
        raise RuntimeError(f"train_a3c: workers ended with exit codes {[p.exitcode for p in procs]} after "
                           f"{len(curves['worker'])} of {workers * updates} updates")
    return curves
