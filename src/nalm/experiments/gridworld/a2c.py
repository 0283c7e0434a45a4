"""A2C for the grid world: S independent agents trained as one tensor program, and their evaluation per T.

A2C is the synchronous form of A3C (Mnih et al. 2016, "Asynchronous Methods for Deep Reinforcement Learning",
Algorithm S3; OpenAI baselines found it "gives equal performance"). Each update:

1. rolls out ``n_steps`` steps of ``num_envs`` episodes per seed in one :class:`TimeGridVectorEnv` (seed s owns
   rows s·B ... s·B + B − 1; episodes auto-reset and the LSTM state is zeroed at each episode's first step; the
   state is carried between updates, gradients are truncated there);
2. computes advantages by GAE (Schulman et al. 2016) with λ = ``gae_lambda`` (λ = 1 gives n-step returns) and
   bootstraps from the value of the last observation;
3. minimises, per seed, L_s = −mean(Â·log π(a)) + c_v·mean((R − V)²) − c_e·mean(H[π]) (means over steps and
   episodes of seed s); the sum over seeds is differentiated, so seed s's gradient is that of L_s alone;
4. clips each seed's gradient to norm ``max_grad_norm`` on its own (:func:`clip_grad_norm_per_seed_`), and steps
   Adam, whose update is elementwise, so seeds never mix.

Actions are sampled by inverse CDF from one numpy generator per seed (``seed_generators(seeds, "actions")``),
episodes from per-slot generators derived from ``seed_generators(seeds, "env")``: seed s's run depends on s only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from nalm.engine.task import evaluation_generator, seed_generators
from nalm.errors import ConfigError, ShapeError

from .agents import ActorCritic
from .env import TimeGridConfig
from .vector import TimeGridVectorEnv, generator_state, make_generator


@dataclass(frozen=True)
class A2CConfig:
    """A2C hyper-parameters (defaults: OpenAI baselines' A2C and the Mnih et al. 2016 entropy bonus, with Adam).

    ``max_grad_norm=None`` switches clipping off (the per-seed norms are still reported); ``optimizer`` is "adam"
    (default), "rmsprop" (Mnih et al. 2016 used a shared RMSProp) or "sgd", each elementwise, so seeds never mix.
    """

    num_envs: int = 64  # episodes in parallel per seed
    n_steps: int = 20
    gamma: float = 0.99
    gae_lambda: float = 0.95
    entropy_coef: float = 0.01
    value_coef: float = 0.5
    learning_rate: float = 1e-3
    max_grad_norm: float | None = 40.0
    optimizer: str = "adam"

    def __post_init__(self) -> None:
        for name in ("num_envs", "n_steps"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"A2CConfig: {name} must be a positive integer, got {v!r}")
        for name, low, high in (("gamma", 0, 1), ("gae_lambda", 0, 1)):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not low <= v <= high:
                raise ConfigError(f"A2CConfig: {name} must be in [{low}, {high}], got {v!r}")
        for name in ("entropy_coef", "value_coef"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0 <= v < math.inf:
                raise ConfigError(f"A2CConfig: {name} must be a finite number >= 0, got {v!r}")
        for name in ("learning_rate", "max_grad_norm"):
            v = getattr(self, name)
            if name == "max_grad_norm" and v is None:
                continue
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v < math.inf:
                raise ConfigError(f"A2CConfig: {name} must be a positive finite number, got {v!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"A2CConfig: optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")


OPTIMIZERS = ("adam", "rmsprop", "sgd")


def make_optimizer(params, config: A2CConfig) -> torch.optim.Optimizer:
    """The optimiser of ``config`` over ``params`` (single-tensor form, as the shared A3C optimiser)."""
    cls = {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop, "sgd": torch.optim.SGD}[config.optimizer]
    return cls(params, lr=config.learning_rate)


# -- the maths ----------------------------------------------------------------------------------------------------
def gae(rewards: Tensor, values: Tensor, dones: Tensor, last_value: Tensor, gamma: float,
        lam: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimates (Schulman et al. 2016, eq. 16) over a rollout, time first.

    rewards, values, dones (n, *batch), last_value (*batch) -> advantages and returns R = Â + V, (n, *batch).
    dones[k] marks that step k ended its episode: nothing flows back across it.
    δ_k = r_k + γ (1 − d_k) V_{k+1} − V_k;  Â_k = δ_k + γ λ (1 − d_k) Â_{k+1}.
    """
    if not (rewards.shape == values.shape == dones.shape and last_value.shape == rewards.shape[1:]):
        raise ShapeError(f"gae: rewards, values, dones must share a shape (n, *batch) and last_value be (*batch); "
                         f"got {tuple(rewards.shape)}, {tuple(values.shape)}, {tuple(dones.shape)}, "
                         f"{tuple(last_value.shape)}")
    alive = 1.0 - dones.to(values.dtype)
    advantages = torch.empty_like(values)
    next_value, next_adv = last_value, torch.zeros_like(last_value)
    for k in range(rewards.shape[0] - 1, -1, -1):
        delta = rewards[k] + gamma * alive[k] * next_value - values[k]
        next_adv = delta + gamma * lam * alive[k] * next_adv
        advantages[k] = next_adv
        next_value = values[k]
    return advantages, advantages + values


def a2c_loss(logits: Tensor, values: Tensor, actions: Tensor, advantages: Tensor, returns: Tensor,
             value_coef: float, entropy_coef: float) -> dict[str, Tensor]:
    """The per-seed A2C loss terms, (S,) each: ``loss``, ``policy_loss``, ``value_loss``, ``entropy``.

    logits (n, S, B, A), values (n, S, B), actions (n, S, B) int, advantages and returns (n, S, B) (treated as
    constants). loss = policy_loss + value_coef·value_loss − entropy_coef·entropy, with
    policy_loss = −mean Â·log π(a), value_loss = mean (R − V)², entropy = mean H[π], means over (n, B).
    """
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, actions.unsqueeze(-1)).squeeze(-1)  # (n, S, B)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    per_seed = lambda t: t.transpose(0, 1).flatten(1).mean(1)  # noqa: E731  (n, S, B) -> (S,)
    policy_loss = per_seed(-advantages.detach() * logp)
    value_loss = per_seed((returns.detach() - values).pow(2))
    entropy = per_seed(entropy)
    loss = policy_loss + value_coef * value_loss - entropy_coef * entropy
    return {"loss": loss, "policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy}


def clip_grad_norm_per_seed_(parameters: Iterable[Tensor], max_norm: float) -> Tensor:
    """Clip each seed's gradient (the slices [s] of every parameter's gradient) to norm ``max_norm`` on its own.

    Returns the per-seed norms before clipping, (S,). One seed's exploding gradient never shrinks another's
    (``torch.nn.utils.clip_grad_norm_`` would clip all seeds by their joint norm).
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        raise ConfigError("clip_grad_norm_per_seed_: no parameter has a gradient")
    S = grads[0].shape[0]
    if any(g.dim() == 0 or g.shape[0] != S for g in grads):
        raise ShapeError(f"clip_grad_norm_per_seed_: every gradient needs the leading seed axis {S}; got shapes "
                         f"{sorted({tuple(g.shape) for g in grads})}")
    norms = torch.stack([g.reshape(S, -1).pow(2).sum(1) for g in grads]).sum(0).sqrt()  # (S,)
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.view((S,) + (1,) * (g.dim() - 1)))
    return norms


def sample_actions(logits: Tensor, rngs: Sequence[np.random.Generator], greedy: bool = False) -> np.ndarray:
    """Actions (S, B) from logits (S, B, A): inverse-CDF sampling, seed s from ``rngs[s]``; or the argmax."""
    if greedy:
        return logits.argmax(-1).numpy()
    probs = torch.softmax(logits.detach(), dim=-1).numpy().astype(np.float64)
    u = np.empty(probs.shape[:2])
    for s, rng in enumerate(rngs):
        rng.random(out=u[s])
    actions = (np.cumsum(probs, axis=-1) < u[..., None]).sum(-1)
    return np.minimum(actions, probs.shape[-1] - 1)


def slot_seeds(rngs: Sequence[np.random.Generator], per_seed: int) -> list[int]:
    """Seeds of the episode slots: ``per_seed`` from each generator, seed-major."""
    return [int(x) for rng in rngs for x in rng.integers(0, 2**63 - 1, per_seed)]


# -- training -----------------------------------------------------------------------------------------------------
class A2C:
    """A2C training of ``agent`` (an :class:`ActorCritic` with S seeds) on ``env_config``; ``seeds`` (S model
    seeds) name the environment and action streams. Call :meth:`update` or :meth:`train`."""

    def __init__(self, agent: ActorCritic, env_config: TimeGridConfig, config: A2CConfig | None = None,
                 seeds: Sequence[int] | None = None):
        self.agent, self.config = agent, config or A2CConfig()
        S, B = agent.num_seeds, self.config.num_envs
        seeds = list(range(S)) if seeds is None else list(seeds)
        if len(seeds) != S:
            raise ConfigError(f"A2C: got {len(seeds)} seeds for an agent with num_seeds={S}")
        if env_config.observation != agent.observation:
            raise ConfigError(f"A2C: the agent reads {agent.observation!r} observations, the environment gives "
                              f"{env_config.observation!r}")
        self.S, self.B = S, B
        self.env = TimeGridVectorEnv(S * B, env_config)
        self.obs, _ = self.env.reset(seed=slot_seeds(seed_generators(seeds, "env"), B))
        self.rngs = seed_generators(seeds, "actions")
        self.optimizer = make_optimizer(agent.parameters(), self.config)
        self.state = agent.initial_state(B)
        self.first = np.ones((S, B), dtype=bool)
        self.updates = 0
        self.env_steps = 0  # per seed

    def update(self) -> dict[str, list[float]]:
        """One rollout and one optimiser step. Returns per-seed lists (S values): the loss terms, the gradient
        norm, and the episodes finished in the rollout: ``episodes``, ``episode_reward``, ``episode_length``,
        ``on_time`` (NaN for a seed that finished none)."""
        out = self.compute_gradients()
        self.optimizer.step()
        for module in self.agent.modules():
            if module is not self.agent and hasattr(module, "post_step"):
                module.post_step()
        return out

    def compute_gradients(self) -> dict[str, list[float]]:
        """One rollout: the agent's ``.grad`` set to the per-seed-clipped gradient of the loss; no optimiser step
        (A3C's workers apply it to the shared model). Returns what :meth:`update` returns."""
        cfg, agent, S, B = self.config, self.agent, self.S, self.B
        state = self.state
        logits, values, actions, rewards, dones = [], [], [], [], []
        finished = np.zeros(S)
        reward_sum, length_sum, on_time_sum = np.zeros(S), np.zeros(S), np.zeros(S)
        obs, first = self.obs, self.first
        for _ in range(cfg.n_steps):
            step_logits, value, state = agent.step(obs, state, first)
            a = sample_actions(step_logits, self.rngs)
            obs, reward, terminated, _, info = self.env.step(a.reshape(-1))
            first = terminated.reshape(S, B)
            logits.append(step_logits)
            values.append(value)
            actions.append(torch.from_numpy(a))
            rewards.append(torch.from_numpy(reward.reshape(S, B)).float())
            dones.append(torch.from_numpy(first))
            finished += first.sum(1)
            reward_sum += np.where(first, reward.reshape(S, B), 0).sum(1)  # the only reward is the last one
            length_sum += np.where(first, info["elapsed"].reshape(S, B), 0).sum(1)
            on_time_sum += (first & info["on_time"].reshape(S, B)).sum(1)
        with torch.no_grad():
            _, last_value, _ = agent.step(obs, state, first)
        self.obs, self.first, self.state = obs, first, tuple(x.detach() for x in state)
        values_t = torch.stack(values)
        advantages, returns = gae(torch.stack(rewards), values_t.detach(), torch.stack(dones), last_value,
                                  cfg.gamma, cfg.gae_lambda)
        terms = a2c_loss(torch.stack(logits), values_t, torch.stack(actions), advantages, returns,
                         cfg.value_coef, cfg.entropy_coef)
        self.optimizer.zero_grad(set_to_none=True)
        terms["loss"].sum().backward()
        norms = clip_grad_norm_per_seed_(agent.parameters(), math.inf if cfg.max_grad_norm is None
                                         else cfg.max_grad_norm)
        self.updates += 1
        self.env_steps += cfg.n_steps * B
        with np.errstate(invalid="ignore", divide="ignore"):
            out = {k: v.detach().tolist() for k, v in terms.items()}
            out.update(grad_norm=norms.tolist(), episodes=finished.tolist(),
                       episode_reward=(reward_sum / finished).tolist(),
                       episode_length=(length_sum / finished).tolist(), on_time=(on_time_sum / finished).tolist())
        return out

    def state_dict(self) -> dict:
        """The whole training state (agent, optimiser, environments, action streams, recurrent state, counters):
        after :meth:`load_state_dict` into a fresh ``A2C`` of the same shape, training continues exactly as if
        never interrupted. Holds tensors and plain Python values only (``torch.load(weights_only=True)`` reads it)."""
        return {"agent": self.agent.state_dict(), "optimizer": self.optimizer.state_dict(),
                "env": self.env.get_state(), "rngs": [generator_state(g) for g in self.rngs],
                "state": [x.detach().clone() for x in self.state], "first": torch.from_numpy(self.first.copy()),
                "updates": self.updates, "env_steps": self.env_steps}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.agent.load_state_dict(state["agent"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.obs = self.env.set_state(state["env"])
        if len(state["rngs"]) != self.S:
            raise ConfigError(f"A2C: a state of {len(state['rngs'])} seeds cannot be loaded into {self.S}")
        self.rngs = [make_generator(st) for st in state["rngs"]]
        self.state = tuple(x.clone() for x in state["state"])
        self.first = state["first"].numpy().copy()
        self.updates, self.env_steps = int(state["updates"]), int(state["env_steps"])

    def train(self, updates: int, *, log_every: int = 10,
              callback: Callable[[int, dict], None] | None = None) -> dict[str, list]:
        """Run ``updates`` updates; every ``log_every`` updates append the per-seed means over those updates to the
        curves. Returns ``{"update": [...], "env_steps": [...] (per seed), "seconds": [...], <metric>: [[S
        values], ...]}`` as plain lists; ``callback(update, row)`` is called with each logged row."""
        if not isinstance(updates, int) or updates < 1 or not isinstance(log_every, int) or log_every < 1:
            raise ConfigError(f"A2C.train: updates and log_every must be positive integers, got {updates!r}, "
                              f"{log_every!r}")
        curves: dict[str, list] = {"update": [], "env_steps": [], "seconds": []}
        window: list[dict] = []
        start = time.perf_counter()
        for k in range(updates):
            window.append(self.update())
            if len(window) == log_every or k == updates - 1:
                row = _mean_rows(window)
                window = []
                curves["update"].append(self.updates)
                curves["env_steps"].append(self.env_steps)
                curves["seconds"].append(time.perf_counter() - start)
                for name, value in row.items():
                    curves.setdefault(name, []).append(value)
                if callback is not None:
                    callback(self.updates, row)
        return curves


def _mean_rows(rows: list[dict]) -> dict[str, list[float]]:
    """Per-seed means over updates; episode statistics weighted by the episodes each update finished."""
    out = {}
    episodes = np.array([r["episodes"] for r in rows])  # (U, S)
    for name in rows[0]:
        values = np.array([r[name] for r in rows], dtype=float)
        if name in ("episode_reward", "episode_length", "on_time"):
            total = episodes.sum(0)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[name] = (np.nansum(values * episodes, 0) / total).tolist()
        elif name == "episodes":
            out[name] = values.sum(0).tolist()
        else:
            out[name] = values.mean(0).tolist()
    return out


# -- evaluation ---------------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(agent: ActorCritic, env_config: TimeGridConfig, *, instructions: Iterable[int] = range(8, 31),
             episodes: int = 100, seed: int = 0, greedy: bool = False,
             seeds: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """Play ``episodes`` episodes per instruction T with every seed's agent; per-seed, per-T results (S, K).

    The episodes (target and start squares) are the same for every seed and every T, drawn from evaluation
    stream ``seed``; actions are sampled from the policy (the stochastic policy that was trained; ``greedy=True``
    takes the argmax instead), model seed s's from its own stream, so a seed's result does not depend on which
    seeds are evaluated beside it (``seeds``: the S model seeds, default 0 … S − 1). Returns ``instructions``
    (K,) and (S, K) arrays: ``reward`` (mean episode reward), ``on_time`` (rate of arriving exactly at T),
    ``early``, ``late`` (arrived before / after T) and ``timeout`` (never arrived) rates.
    """
    instructions = np.array(sorted(set(int(t) for t in instructions)), dtype=np.int64)
    if instructions.size == 0 or instructions[0] < 1 or not isinstance(episodes, int) or episodes < 1:
        raise ConfigError(f"evaluate: instructions must be positive integers and episodes a positive integer; got "
                          f"{instructions.tolist()!r}, {episodes!r}")
    S, E = agent.num_seeds, episodes
    seeds = list(range(S)) if seeds is None else [int(s) for s in seeds]
    if len(seeds) != S:
        raise ConfigError(f"evaluate: got {len(seeds)} seeds for an agent with num_seeds={S}")
    config = TimeGridConfig.build(env_config, instruction_limit=max(env_config.instruction_limit,
                                                                    int(instructions[-1])))
    placements = slot_seeds([evaluation_generator(seed, 0)], E) * S  # the same E episodes for every seed
    out = {k: np.zeros((S, len(instructions))) for k in ("reward", "on_time", "early", "late", "timeout")}
    for j, T in enumerate(instructions):
        rngs = [evaluation_generator(seed, 1 + s) for s in seeds]
        env = TimeGridVectorEnv(S * E, config)
        obs, _ = env.reset(seed=placements, options={"instruction": int(T)})
        state, first = agent.initial_state(E), np.ones((S, E), dtype=bool)
        done = np.zeros(S * E, dtype=bool)
        reward, elapsed, arrived = np.zeros(S * E), np.zeros(S * E), np.zeros(S * E, dtype=bool)
        while not done.all():
            logits, _, state = agent.step(obs, state, first)
            obs, r, terminated, _, info = env.step(sample_actions(logits, rngs, greedy).reshape(-1))
            new = terminated & ~done
            reward[new], elapsed[new], arrived[new] = r[new], info["elapsed"][new], info["arrived"][new]
            done |= terminated
            first = terminated.reshape(S, E)
        per_seed = lambda x: x.reshape(S, E).mean(1)  # noqa: E731
        out["reward"][:, j] = per_seed(reward)
        out["on_time"][:, j] = per_seed(arrived & (elapsed == T))
        out["early"][:, j] = per_seed(arrived & (elapsed < T))
        out["late"][:, j] = per_seed(arrived & (elapsed > T))
        out["timeout"][:, j] = per_seed(~arrived)
    out["instructions"] = instructions
    return out


def measure_training_steps(name: str = "a2c-lstm", *, observation: str = "grid", num_seeds: int = 1,
                           num_envs: int = 64, updates: int = 10, agent_config=None) -> float:
    """Env-steps per second (all seeds together) of A2C training from scratch: ``updates`` updates after one
    warm-up update, each ``n_steps`` × ``num_envs`` × ``num_seeds`` env-steps with the forward, backward and step."""
    from nalm.engine.task import torch_generators

    from .agents import build_agent

    env_config = TimeGridConfig(observation=observation)
    seeds = list(range(num_seeds))
    agent = build_agent(name, env_config, num_seeds, agent_config, generator=torch_generators(seeds, "init"))
    trainer = A2C(agent, env_config, A2CConfig(num_envs=num_envs), seeds)
    trainer.update()
    start = time.perf_counter()
    for _ in range(updates):
        trainer.update()
    return updates * trainer.config.n_steps * num_envs * num_seeds / (time.perf_counter() - start)
