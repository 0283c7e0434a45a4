"""One grid-world run for the experiment engine: train S seeds (A2C, or A3C seed by seed), log, checkpoint, resume,
evaluate per instruction T (Trask et al. 2018, §4.5, Figure 5).

:func:`run_agents` is what :meth:`nalm.experiments.gridworld.Gridworld.train` calls. Training is cut into windows
of ``log_every`` updates; after each window the per-seed means of the training episodes and loss terms become one
curve row per seed, go to TensorBoard when asked, and are written to the store together with a checkpoint of the
whole training state (agent, optimiser, environments, random streams), so a killed run resumes where its last
window ended. A2C resumes exactly (the same numbers as an uninterrupted run); A3C's Hogwild workers are not
reproducible step for step, so its resumed run is merely a valid continuation.

With A3C (``algorithm="a3c"``) each seed is one run of ``workers`` Hogwild processes (one seed at a time: the
workers already fill the cores); ``iterations`` counts the updates of all workers together, so A2C and A3C see the
same number of episodes per seed. The finished seeds are kept as slices of one S-seed agent, evaluated like A2C's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from nalm.engine.progress import tensorboard_writers
from nalm.engine.task import torch_generators
from nalm.errors import ConfigError

from .a2c import A2C, A2CConfig, _mean_rows, evaluate
from .agents import ActorCritic, AgentConfig, build_agent
from .env import TimeGridConfig

#: Curve values per logging window (per seed), beside "env_steps" and "seconds".
CURVE_METRICS = ("episode_reward", "episode_length", "on_time", "episodes", "loss", "policy_loss", "value_loss",
                 "entropy", "grad_norm")
TENSORBOARD_TAGS = {"episode_reward": "episode/reward", "episode_length": "episode/length",
                    "on_time": "episode/on_time_rate", "loss": "loss/total", "policy_loss": "loss/policy",
                    "value_loss": "loss/value", "entropy": "loss/entropy", "grad_norm": "loss/grad_norm"}


@dataclass(frozen=True)
class RunPlan:
    """What :func:`run_agents` trains: agent ``agent`` (AGENTS name) with ``agent_config`` on ``env_config``."""

    agent: str
    env_config: TimeGridConfig
    agent_config: AgentConfig
    a2c: A2CConfig
    seeds: tuple[int, ...]
    updates: int
    log_every: int
    algorithm: str = "a2c"
    workers: int = 2
    eval_instructions: tuple[int, ...] = tuple(range(8, 31))
    eval_episodes: int = 200
    eval_seed: int = 0


def _finite_by_seed(agent: ActorCritic) -> np.ndarray:
    """(S,) bool: every parameter of the seed is finite."""
    ok = torch.ones(agent.num_seeds, dtype=torch.bool)
    for p in agent.parameters():
        ok &= torch.isfinite(p.detach().reshape(agent.num_seeds, -1)).all(1)
    return ok.numpy()


class _Logger:
    """Turns a window's per-seed means into curve rows, TensorBoard scalars and checkpoints."""

    def __init__(self, plan: RunPlan, store, key, writers: list, start: float):
        self.plan, self.store, self.key, self.writers = plan, store, key, writers
        self.start = start
        self.unsaved: list[dict] = []
        self.curves: list[dict] = []
        self.bad = np.zeros(len(plan.seeds), dtype=bool)

    def window(self, index: int, step: int, env_steps: int, row: dict, seconds: float) -> None:
        """Seed ``plan.seeds[index]`` (or every seed when index is None) finished a window at update ``step``."""
        seeds = list(enumerate(self.plan.seeds)) if index is None else [(index, self.plan.seeds[index])]
        for j, (i, s) in enumerate(seeds):
            values = {m: float(row[m][j]) for m in CURVE_METRICS if m in row}
            if not math.isfinite(values.get("loss", 0.0)):
                self.bad[i] = True
            out = {"seed": s, "step": step, "env_steps": env_steps, "seconds": round(seconds, 3), **values}
            self.curves.append(out)
            self.unsaved.append(out)
            if self.writers:
                for name, tag in TENSORBOARD_TAGS.items():
                    if name in values and math.isfinite(values[name]):
                        self.writers[i].add_scalar(tag, values[name], env_steps)

    def checkpoint(self, step: int, state: dict) -> None:
        if self.store is None or self.key is None:
            self.unsaved.clear()
            return
        state = {**state, "bad": torch.from_numpy(self.bad.copy()),
                 "seconds": time.perf_counter() - self.start + state.get("seconds", 0.0)}
        self.store.save_checkpoint(self.key, step, state, self.unsaved)
        self.unsaved.clear()
        for w in self.writers:
            w.flush()


def run_agents(plan: RunPlan, *, store=None, key: str | None = None, tensorboard: str = "",
               progress: Callable[[int], None] | None = None) -> dict:
    """Train and evaluate the seeds of ``plan``; resume from ``store``'s checkpoint of ``key`` when there is one.

    Returns {"agent": the S-seed agent, "curves": rows, "evaluation": :func:`nalm.experiments.gridworld.a2c.evaluate`'s result,
    "diverged": (S,) bool, "env_steps": per seed, "seconds": of training, summed over resumed parts}.
    """
    if plan.algorithm not in ("a2c", "a3c"):
        raise ConfigError(f"algorithm must be 'a2c' or 'a3c', got {plan.algorithm!r}")
    writers = tensorboard_writers(tensorboard, plan.seeds) if tensorboard else []
    start = time.perf_counter()
    log = _Logger(plan, store, key, writers, start)
    saved = store.load_checkpoint(key)[1] if store is not None and key is not None and \
        store.checkpoint_step(key) is not None else None
    if saved is not None:
        log.bad = saved["bad"].numpy().copy()
    base_seconds = saved["seconds"] if saved is not None else 0.0
    try:
        if plan.algorithm == "a2c":
            agent, env_steps = _a2c(plan, log, saved, base_seconds, progress)
        else:
            agent, env_steps = _a3c(plan, log, saved, base_seconds, progress)
        evaluation = evaluate(agent, plan.env_config, instructions=plan.eval_instructions,
                              episodes=plan.eval_episodes, seed=plan.eval_seed, seeds=plan.seeds)
        for i, w in enumerate(writers):
            for j, T in enumerate(evaluation["instructions"]):
                w.add_scalar("evaluation/reward_by_T", float(evaluation["reward"][i, j]), int(T))
                w.add_scalar("evaluation/on_time_rate_by_T", float(evaluation["on_time"][i, j]), int(T))
    finally:
        for w in writers:
            w.close()
    diverged = log.bad | ~_finite_by_seed(agent)
    return {"agent": agent, "curves": log.curves, "evaluation": evaluation, "diverged": diverged,
            "env_steps": env_steps, "seconds": base_seconds + time.perf_counter() - start}


def _new_agent(plan: RunPlan, seeds) -> ActorCritic:
    return build_agent(plan.agent, plan.env_config, len(seeds), plan.agent_config,
                       generator=torch_generators(list(seeds), "init"))


def _a2c(plan: RunPlan, log: _Logger, saved, base_seconds: float, progress) -> tuple[ActorCritic, int]:
    agent = _new_agent(plan, plan.seeds)
    trainer = A2C(agent, plan.env_config, plan.a2c, list(plan.seeds))
    if saved is not None:
        trainer.load_state_dict(saved["trainer"])
    while trainer.updates < plan.updates:
        n = min(plan.log_every, plan.updates - trainer.updates)
        rows = [trainer.update() for _ in range(n)]
        log.window(None, trainer.updates, trainer.env_steps, _mean_rows(rows),
                   base_seconds + time.perf_counter() - log.start)
        log.checkpoint(trainer.updates, {"trainer": trainer.state_dict(), "seconds": base_seconds})
        if progress is not None:
            progress(n)
    return agent, trainer.env_steps


def _a3c(plan: RunPlan, log: _Logger, saved, base_seconds: float, progress) -> tuple[ActorCritic, int]:
    from .a3c import shared_optimizer, train_a3c

    holder = _new_agent(plan, plan.seeds)  # finished seeds are copied into their slices
    done, current = 0, None
    if saved is not None:
        holder.load_state_dict(saved["holder"])
        done, current = int(saved["done"]), saved["current"]
    per_round = max(plan.workers, plan.log_every - plan.log_every % plan.workers)
    steps_per_update = plan.a2c.n_steps * plan.a2c.num_envs
    for i in range(done, len(plan.seeds)):
        seed = plan.seeds[i]
        agent = _new_agent(plan, [seed])
        agent.share_memory()
        if current is not None:
            agent.load_state_dict(current["agent"])
            optimizer = shared_optimizer(agent.parameters(), plan.a2c, current["optimizer"])
            updates, round_ = int(current["updates"]), int(current["round"])
        else:
            optimizer = shared_optimizer(agent.parameters(), plan.a2c)
            updates, round_ = 0, 0
        current = None
        while updates < plan.updates:
            n = min(per_round, plan.updates - updates)
            workers = min(plan.workers, n)
            rows: list[dict] = []
            train_a3c(agent, plan.env_config, plan.a2c, seed=seed, workers=workers, updates=n // workers,
                      optimizer=optimizer, round_=round_, callback=lambda _, row: rows.append(row))
            updates += workers * (n // workers)
            round_ += 1
            log.window(i, updates, updates * steps_per_update, _mean_rows(rows),
                       base_seconds + time.perf_counter() - log.start)
            state = {"agent": agent.state_dict(), "optimizer": optimizer.state_dict(), "updates": updates,
                     "round": round_}
            finished = updates >= plan.updates
            if finished:
                with torch.no_grad():
                    for p, q in zip(holder.parameters(), agent.parameters()):
                        p[i].copy_(q[0])
            log.checkpoint(i * plan.updates + updates, {
                "holder": holder.state_dict(), "done": i + 1 if finished else i,
                "current": None if finished else state, "seconds": base_seconds})
            if progress is not None:
                progress(workers * (n // workers))
    return holder, plan.updates * steps_per_update
