"""Figure 5 of Trask et al. (2018, §4.5): an actor-critic agent learns to reach a target at exactly the instructed
time T in a 5 × 5 grid world, with and without a NAC; trained on T in [8, 12], tested on T up to 30 (SPEC §2.6).

The environment, agents and algorithms live in :mod:`nalm.experiments.gridworld` (gymnasium ``nalm/TimeGrid-v0``); this module is the
experiment: its options, training through :func:`nalm.experiments.gridworld.loop.run_agents` (its own loop: reinforcement learning),
summary, sweeps, claims, samples and report section. Training options map onto the engine's: ``--iterations`` are
A2C updates, ``--batch-size`` the episodes played in parallel per seed (per worker with A3C), ``--eval-every`` the
updates per logging window (a curve row and a checkpoint), ``--grad-clip`` the per-seed gradient norm.

Models: ``a2c-lstm`` (the paper's baseline: the instruction concatenated to the vision output before the LSTM),
``a2c-nac`` (the paper's wording: the instruction also goes through a NAC whose output returns into the LSTM; the
NAC reads [instruction, previous LSTM output]) and ``a2c-nac-counter`` (our variant: the NAC is a recurrent cell of
its own, n_t = NAC([i_t, 1, n_{t−1}]), which could hold a countdown); see :mod:`nalm.experiments.gridworld.agents`.
"""

from __future__ import annotations

import dataclasses
import math
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nalm.engine.experiment import Experiment, RunSpec, register_experiment
from nalm.engine.reporting import median
from nalm.engine.train import TrainConfig
from nalm.errors import ConfigError

from .claims import CLAIMS, COUNTDOWN, HOLD
from .report import MODELS



def _positive(name: str, v, low: float = 1) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < low:
        raise ConfigError(f"gridworld: {name} must be an integer >= {low}, got {v!r}")


@dataclass(frozen=True)
class GridworldConfig:
    observation: str = field(default="grid", metadata={
        "choices": ("grid", "image"), "help": "what the agent sees: the 5 × 5 × 2 one-hot grid (fast; the same "
        "information) or the paper's 56 × 56 RGB image (about 10× slower to train)"})
    algorithm: str = field(default="a2c", metadata={
        "choices": ("a2c", "a3c"), "help": "a2c: synchronous, all seeds as one tensor program, reproducible; "
        "a3c: the paper's Hogwild workers, one seed at a time, not reproducible step for step"})
    workers: int = field(default=2, metadata={"help": "A3C worker processes"})
    n_steps: int = field(default=20, metadata={"help": "rollout length of one update (steps per episode slot)"})
    gamma: float = field(default=0.99, metadata={"help": "discount"})
    gae_lambda: float = field(default=0.95, metadata={"help": "GAE λ (1: n-step returns)"})
    entropy_coef: float = field(default=0.01, metadata={"help": "entropy bonus"})
    value_coef: float = field(default=0.5, metadata={"help": "weight of the value loss"})
    hidden_size: int = field(default=64, metadata={"help": "LSTM units"})
    vision_size: int = field(default=64, metadata={"help": "vision features"})
    size: int = field(default=5, metadata={"help": "grid side"})
    min_instruction: int = field(default=8, metadata={"help": "smallest training T (8: the farthest target on 5 × 5)"})
    max_instruction: int = field(default=12, metadata={"help": "largest training T"})
    extra_steps: int = field(default=5, metadata={"help": "step limit L = T + extra_steps"})
    eval_max_instruction: int = field(default=30, metadata={"help": "evaluate T from min_instruction to this"})
    eval_episodes: int = field(default=200, metadata={"help": "evaluation episodes per T and seed"})
    counter_weights: str = field(default="", metadata={
        "help": "a2c-nac-counter only: 'a,b,c' hand-sets and freezes the counter, n_t = a·i_t + b + c·n_t−1, in "
                "place of the learned NAC (the controlled run: '1,-0.1,1' counts down to 0 at t = T − 1)",
        "added": True})

    def __post_init__(self) -> None:
        if importlib.util.find_spec("gymnasium") is None:
            raise ConfigError("gridworld needs gymnasium, which is not installed: pip install 'nalm[rl]'")
        for name in ("workers", "n_steps", "hidden_size", "vision_size", "min_instruction", "max_instruction",
                     "extra_steps", "eval_episodes"):
            _positive(name, getattr(self, name))
        _positive("size", self.size, 2)
        if self.observation not in ("grid", "image") or self.algorithm not in ("a2c", "a3c"):
            raise ConfigError(f"gridworld: observation is grid or image and algorithm a2c or a3c; got "
                              f"{self.observation!r}, {self.algorithm!r}")
        if not self.min_instruction <= self.max_instruction <= self.eval_max_instruction:
            raise ConfigError(f"gridworld: need min_instruction <= max_instruction <= eval_max_instruction, got "
                              f"{self.min_instruction}, {self.max_instruction}, {self.eval_max_instruction}")
        self.counter()
        self.env_config()  # the environment's own checks
        self.a2c_config(TrainConfig(regularizers={}))

    def env_config(self):
        from .env import TimeGridConfig

        return TimeGridConfig(size=self.size, min_instruction=self.min_instruction,
                              max_instruction=self.max_instruction, extra_steps=self.extra_steps,
                              observation=self.observation,
                              instruction_limit=max(100, self.eval_max_instruction))

    def a2c_config(self, train: TrainConfig):
        from .a2c import A2CConfig

        return A2CConfig(num_envs=train.batch_size, n_steps=self.n_steps, gamma=self.gamma, gae_lambda=self.gae_lambda,
                         entropy_coef=self.entropy_coef, value_coef=self.value_coef,
                         learning_rate=train.learning_rate, max_grad_norm=train.grad_clip, optimizer=train.optimizer)

    def counter(self) -> tuple[float, float, float] | None:
        """The hand-set counter weights, or None."""
        if not self.counter_weights:
            return None
        try:
            weights = tuple(float(w) for w in self.counter_weights.split(","))
        except ValueError:
            weights = ()
        if len(weights) != 3 or not all(math.isfinite(w) for w in weights):
            raise ConfigError(f"gridworld: counter_weights must be three numbers 'a,b,c', got "
                              f"{self.counter_weights!r}")
        return weights

    def agent(self, model: str):
        from .agents import AgentConfig

        wiring = "counter" if model == "a2c-nac-counter" else "paper"
        if self.counter_weights and wiring != "counter":
            raise ConfigError(f"gridworld: counter_weights needs the model a2c-nac-counter, not {model}")
        return ("a2c-lstm" if model == "a2c-lstm" else "a2c-nac",
                AgentConfig(hidden_size=self.hidden_size, vision_size=self.vision_size, nac_wiring=wiring,
                            counter_weights=self.counter()))


# -- per-seed results ------------------------------------------------------------------------------------------------
def horizon(on_time: np.ndarray, T: np.ndarray, start: int) -> int:
    """The largest T such that the on-time rate is >= HOLD for every instruction from ``start`` to T (start − 1
    when it fails at ``start`` already)."""
    last = start - 1
    for t, v in zip(T, on_time):
        if t < start:
            continue
        if not v >= HOLD:
            break
        last = int(t)
    return last


def seed_records(ev: dict, seeds, config: GridworldConfig, diverged, updates: int, env_steps: int,
                 nac: list | None) -> list[dict]:
    """One record per seed: rates inside and beyond the training range, the horizon, divergence."""
    T = ev["instructions"]
    inside = (T >= config.min_instruction) & (T <= config.max_instruction)
    beyond = T > config.max_instruction
    out = []
    for i, s in enumerate(seeds):
        r = {"seed": s, "diverged": bool(diverged[i]), "best_step": updates, "env_steps": env_steps,
             "horizon": horizon(ev["on_time"][i], T, config.min_instruction)}
        for m in ("reward", "on_time", "early", "late", "timeout"):
            r[f"{m}_train"] = float(ev[m][i, inside].mean())
            r[f"{m}_beyond"] = float(ev[m][i, beyond].mean()) if beyond.any() else None
        if nac is not None:
            r["nac_max_abs_weight"] = float(np.abs(np.asarray(nac[i])).max())
        out.append(r)
    return out


def nac_weights(agent) -> list | None:
    """Per seed, the NAC's W = tanh(Ŵ)·σ(M̂) as nested lists (None for the baseline)."""
    if not agent.uses_nac:
        return None
    if agent.config.counter_weights is not None:
        return [[list(agent.config.counter_weights)]] * agent.num_seeds
    unit = agent.nac.unit if hasattr(agent.nac, "unit") else agent.nac
    return unit.weight.detach().double().tolist()


def _round(v, digits: int = 4):
    return None if v is None else round(float(v), digits)


def _spread(values: list) -> dict:
    vals = [v for v in values if v is not None]
    return {"median": _round(median(vals)), "min": _round(min(vals)) if vals else None,
            "max": _round(max(vals)) if vals else None}


@register_experiment
class Gridworld(Experiment):
    name = "gridworld"
    help = "Figure 5: an actor-critic agent tracking time in a grid world, with and without a NAC"
    description = ("Figure 5 (Trask et al. 2018, §4.5): reach the red target at exactly the instructed step T; train "
                   "T in [8, 12], evaluate T up to 30. --iterations counts A2C updates, --batch-size the episodes "
                   "played in parallel per seed, --eval-every the updates per logged (and checkpointed) window.")
    Config = GridworldConfig
    models = MODELS
    default_model = "a2c-nac"
    model_help = "the agent: a2c-lstm (baseline), a2c-nac (paper wiring), a2c-nac-counter (our NAC counter)"
    train_defaults = {"iterations": 3000, "batch_size": 64, "learning_rate": 3e-3, "eval_every": 50, "seeds": 3,
                      "grad_clip": 40.0, "regularizers": {}}
    unsupported_train = ("lr_decay", "grad_clip_value")  # A2C / A3C: constant learning rate, norm clipping only
    splits = ("train", "evaluation")
    png = True
    smoke = {"hidden_size": 8, "vision_size": 8, "n_steps": 4, "eval_episodes": 4, "eval_max_instruction": 13}
    claims = CLAIMS

    def train(self, spec, *, store=None, key=None, progress=False, device=None):
        from nalm.engine.progress import ProgressBar
        from nalm.engine.train import TrainResult

        from .loop import RunPlan, run_agents

        if device is not None and getattr(device, "type", str(device)) != "cpu":
            raise ConfigError(f"gridworld trains on the CPU (its environment is numpy arrays); got device {device}")
        c, tc = spec.task_config(), spec.train
        agent, agent_config = c.agent(spec.model)
        plan = RunPlan(agent=agent, env_config=c.env_config(), agent_config=agent_config, a2c=c.a2c_config(tc),
                       seeds=tuple(tc.seed_ids), updates=tc.iterations, log_every=tc.eval_every,
                       algorithm=c.algorithm, workers=c.workers,
                       eval_instructions=tuple(range(c.min_instruction, c.eval_max_instruction + 1)),
                       eval_episodes=c.eval_episodes)
        done = store.checkpoint_step(key) if store is not None and key is not None else None
        bar = ProgressBar(tc.iterations * (tc.seeds if c.algorithm == "a3c" else 1), done or 0, spec.name, progress)
        out = run_agents(plan, store=store, key=key, tensorboard=tc.tensorboard or "", progress=bar.update)
        bar.close()
        ev, weights = out["evaluation"], nac_weights(out["agent"])
        records = seed_records(ev, tc.seed_ids, c, out["diverged"], tc.iterations, out["env_steps"], weights)
        per_T = {"instructions": ev["instructions"].tolist(), "seeds": tc.seed_ids,
                 **{m: ev[m].tolist() for m in ("reward", "on_time", "early", "late", "timeout")}}
        artifacts = {"per_instruction": per_T, **({"nac_weights": weights} if weights is not None else {})}
        return TrainResult(records, out["curves"], out["agent"], out["seconds"], artifacts)

    def summarize(self, spec, result):
        recs = result.records
        per = result.artifacts["per_instruction"]
        summary = {"seeds": len(recs), "diverged": sum(r["diverged"] for r in recs),
                   "env_steps_per_seed": recs[0]["env_steps"] if recs else None,
                   "horizons": [r["horizon"] for r in recs], "horizon": _spread([r["horizon"] for r in recs])}
        for m in ("on_time_train", "reward_train", "on_time_beyond", "reward_beyond", "early_beyond",
                  "nac_max_abs_weight"):
            if recs and m in recs[0]:
                summary[m] = _spread([r[m] for r in recs])
        summary["per_T"] = {"T": per["instructions"], **{m: [_round(median(col)) for col in zip(*per[m])]
                                                         for m in ("reward", "on_time", "early", "late", "timeout")}}
        return summary

    def merge_artifacts(self, spec, parts, records):
        """The artifacts of a run trained as blocks of seeds (nalm.engine.executors): per-seed rows joined in seed order."""
        per = [a["per_instruction"] for _, a in parts]
        out = {"per_instruction": {"instructions": per[0]["instructions"],
                                   **{k: [row for p in per for row in p[k]] for k in per[0] if k != "instructions"}}}
        if all("nac_weights" in a for _, a in parts):
            out["nac_weights"] = [w for _, a in parts for w in a["nac_weights"]]
        return out

    def run_name(self, config, model):
        return (f"{self.name}/{model}/{config.observation}" + ("/a3c" if config.algorithm == "a3c" else "")
                + (f"/counter={config.counter_weights}" if config.counter_weights else ""))

    def grid(self, profile):
        """quick: the two agents of the paper, 3 seeds × 3,000 updates (3.8M env-steps per seed; 5.5 min of CPU in
        all: 3 min on 2 idle cores, 22 min on ours at a load average of 12); acceptance: all three agents and the
        counter hand-set to a countdown (the controlled run), 5 seeds × 6,000 updates (7.7M env-steps per seed; 19 min
        of CPU measured for the three agents, 6 min per agent); paper: the 56 × 56 image
        the paper's agents saw, 10 seeds × 20,000 updates (25.6M env-steps per
        seed; about a day of CPU). The compact grid carries the same information as the image and trains about 10×
        faster (rl.vector, rl.agents), so quick and acceptance use it; ``--observation image`` trains on pixels.
        """
        plans = {"quick": (("a2c-lstm", "a2c-nac"), 3, 3_000, "grid"),
                 "acceptance": (MODELS, 5, 6_000, "grid"), "paper": (MODELS, 10, 20_000, "image")}
        if profile not in plans:
            return []
        models, seeds, updates, observation = plans[profile]
        train = TrainConfig(iterations=updates, seeds=seeds, batch_size=64, learning_rate=3e-3,
                            eval_every=50 if updates <= 6_000 else 200, grad_clip=40.0, regularizers={})
        controlled = [RunSpec(self.name, "a2c-nac-counter", {"observation": observation, "counter_weights": COUNTDOWN},
                              train)] if profile == "acceptance" else []
        return [RunSpec(self.name, m, {"observation": observation}, train) for m in models] + controlled

    def cost(self, spec):
        """Seconds of one core: per update, n_steps × (1.2 ms + 7.4 µs per episode-step of all seeds) for the grid
        (×10 per episode-step for images, ×1.15 with a NAC), plus the evaluation; one seed at a time with A3C.
        Calibrated on this machine: ``measure_training_steps`` gave 0.7 ms + 4.5 µs (S = 1–8, 128 episodes), but
        3-seed runs of 1,500 updates used 1.65× that; with the constants above, the 3-seed runs of 3,000 updates
        (the quick profile) used 156 s (LSTM) and 171 s (NAC) of CPU against 162 s and 185 s estimated. A machine
        shared with other work takes longer in wall time (22 min for them at a load average of 12 on 2 cores)."""
        c, tc = spec.task_config(), spec.train
        parallel = 1 if c.algorithm == "a3c" else tc.seeds
        per_step = 7.4e-6 * (10 if c.observation == "image" else 1) * (1.15 if spec.model != "a2c-lstm" else 1)
        update = c.n_steps * (1.2e-3 + per_step * parallel * tc.batch_size)
        ts = range(c.min_instruction, c.eval_max_instruction + 1)
        evaluation = sum((t + c.extra_steps) * (1.2e-3 + per_step * tc.seeds * c.eval_episodes) for t in ts)
        return tc.iterations * update * (tc.seeds if c.algorithm == "a3c" else 1) + evaluation

    # -- looking at the data -----------------------------------------------------------------------------------------
    def sample(self, config, split, count, seed):
        """``count`` episode starts: the instruction, agent and target squares, the grid (A agent, X target) and the
        scripted on-time walk. ``train``: seed ``seed``'s first training episodes (T in the training range);
        ``evaluation``: the fixed evaluation episodes, T cycling through the evaluation range."""
        from nalm.engine.task import evaluation_generator, seed_generators

        from .a2c import slot_seeds
        from .env import ACTION_NAMES, move, oracle_actions
        from .vector import TimeGridVectorEnv

        if split not in self.splits:
            raise ConfigError(f"gridworld: unknown split {split!r}; choose from: {', '.join(self.splits)}")
        env_config = dataclasses.replace(config.env_config(), observation="grid")
        env = TimeGridVectorEnv(count, env_config)
        if split == "train":
            env.reset(seed=slot_seeds(seed_generators([seed], "env"), count))
        else:
            ts = np.arange(count) % (config.eval_max_instruction - config.min_instruction + 1) + config.min_instruction
            env.reset(seed=slot_seeds([evaluation_generator(0, 0)], count), options={"instruction": ts})
        agent, target, T = env.agent.copy(), env.target.copy(), env.instruction.copy()
        walks, cells, t = [[] for _ in range(count)], agent.copy(), 0
        while t < T.max():
            a = oracle_actions(cells, target, np.full(count, t), T, config.size)
            for i in np.flatnonzero(t < T):
                walks[i].append(ACTION_NAMES[a[i]])
            cells, t = move(cells, a, config.size), t + 1
        out = []
        for i in range(count):
            (ar, ac), (tr, tc) = divmod(int(agent[i]), config.size), divmod(int(target[i]), config.size)
            rows = [["."] * config.size for _ in range(config.size)]
            rows[tr][tc], rows[ar][ac] = "X", "A"
            out.append({"instruction": int(T[i]), "agent": [ar, ac], "target": [tr, tc],
                        "distance": abs(ar - tr) + abs(ac - tc), "grid": ["".join(r) for r in rows],
                        "on_time_actions": walks[i], "reward_on_time": env_config.reward_on_time})
        return out

    def write_png(self, config, split, count, seed, path):
        """Frames of seed ``seed``'s first episode of ``split`` played by the scripted on-time walk: ``count``
        frames (at least 2) spread over the whole episode, the start and the arrival included."""
        from .env import TimeGridEnv, save_frames_png

        first = self.sample(config, split, 1, seed)[0]
        env = TimeGridEnv(render_mode="rgb_array", config=dataclasses.replace(config.env_config(), observation="image"))
        env.reset(seed=0, options={"instruction": first["instruction"], "agent": first["agent"],
                                   "target": first["target"]})
        frames, done = [env.render()], False
        while not done:
            _, _, done, _, _ = env.step(env.oracle_action())
            frames.append(env.render())
        keep = sorted(set(np.linspace(0, len(frames) - 1, max(2, min(count, len(frames)))).round().astype(int)))
        save_frames_png([frames[k] for k in keep], Path(path),
                        titles=[f"t = {k}" + (f" (T = {first['instruction']})" if k == 0 else "") for k in keep])

    # -- report ------------------------------------------------------------------------------------------------------
    def report(self, ctx):
        if not any(r.get("summary") for r in ctx.runs):
            return ["## Figure 5: tracking time in a grid world", "",
                    "No finished gridworld run in the store (`nalm reproduce --only gridworld`).", ""]
        from .report import section

        return section(ctx)
