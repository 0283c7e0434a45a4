"""Actor-critic agents of the grid world (Trask et al. 2018, §4.5), with a seed axis.

Both agents follow the A3C agent of Mnih et al. (2016, "Asynchronous Methods for Deep Reinforcement Learning"):
vision network -> LSTM core -> a policy head (5 action logits) and a value head. S independent agents are one
tensor program: every parameter has a leading seed axis S, observations are (S, B, ...), and nothing is computed
across seeds.

- ``a2c-lstm`` (the paper's baseline): the instruction i_t is concatenated to the vision output before the LSTM:
  LSTM input x_t = [v_t, i_t].
- ``a2c-nac``: the same, and the instruction also passes through a NAC (``nalm.get_unit("nac")``, Trask et al.
  2018 eq. 1) whose output n_t returns into the LSTM: x_t = [v_t, i_t, n_t]. The paper says only that the
  instruction goes "through a NAC and back into the LSTM"; two wirings (``AgentConfig.nac_wiring``):

  * ``"paper"`` (default): n_t = NAC([i_t, h_{t−1}]): the NAC reads the instruction and the LSTM's previous
    output, so its own output loops back through the LSTM.
  * ``"counter"`` (our variant): the NAC is a recurrent cell of its own, n_t = NAC([i_t, 1, n_{t−1}]), n_{−1} = 0,
    as ``nalm.RecurrentCell``: with weights (1, −0.1, 1) it would hold T/10 − 0.1·(t+1), a countdown; nothing in
    its initialisation points there. ``AgentConfig.counter_weights`` (the controlled run) hand-sets and freezes
    those weights: n_t = a·i_t + b + c·n_{t−1}, no NAC.

The instruction enters as i_t = T · ``instruction_scale`` (0.1) at t = 0 and 0 afterwards (the environment shows
T at t = 0 only, unless ``instruction_every_step``).

Vision: on the one-hot grid (``observation="grid"``) one linear layer + ReLU; on the 56 × 56 image the Mnih et al.
(2016) conv stack, Conv 16 8×8/4 -> ReLU -> Conv 32 4×4/2 -> ReLU -> linear + ReLU.

Initialisation (general, nothing task-specific): linear and conv layers as ``nn.Linear`` / ``nn.Conv2d``
(U[±1/√fan_in]), the LSTM as ``nn.LSTM`` (U[±1/√H]), the NAC's Ŵ, M̂ Glorot uniform (the unit's default); the
policy head's weights are then scaled by 0.01 and its bias zeroed so that the first policy is nearly uniform (as
OpenAI baselines' A2C, whose policy layer has an init scale of 0.01).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from nalm.errors import ConfigError, ShapeError
from nalm.nn.models import SeedRNN
from nalm.units import get_unit
from nalm.units.base import Generators
from nalm.units.recurrent import RecurrentCell

from .env import MOVES, TimeGridConfig

AGENTS = ("a2c-lstm", "a2c-nac")
NAC_WIRINGS = ("paper", "counter")

State = tuple[Tensor, Tensor, Tensor]  # (h, c, n): LSTM output, LSTM cell, NAC counter; each (S, B, ·)


@dataclass(frozen=True)
class AgentConfig:
    """Sizes and wiring of the agents (Mnih et al. 2016 used vision 256 and LSTM 256; smaller suffices here)."""

    hidden_size: int = 64
    vision_size: int = 64
    instruction_scale: float = 0.1
    nac_size: int = 1
    nac_wiring: str = "paper"
    policy_init_scale: float = 0.01
    counter_weights: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.counter_weights is not None and (
                self.nac_wiring != "counter" or self.nac_size != 1 or len(self.counter_weights) != 3
                or not all(isinstance(w, (int, float)) and math.isfinite(w) for w in self.counter_weights)):
            raise ConfigError(f"AgentConfig: counter_weights are three finite numbers (a, b, c) for the counter "
                              f"wiring with nac_size 1; got {self.counter_weights!r} with wiring {self.nac_wiring!r}")
        for name in ("hidden_size", "vision_size", "nac_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"AgentConfig: {name} must be a positive integer, got {v!r}")
        for name in ("instruction_scale", "policy_init_scale"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v < math.inf:
                raise ConfigError(f"AgentConfig: {name} must be a positive finite number, got {v!r}")
        if self.nac_wiring not in NAC_WIRINGS:
            raise ConfigError(f"AgentConfig: nac_wiring must be one of {NAC_WIRINGS}, got {self.nac_wiring!r}")


def _fill_uniform(param: Tensor, bound: float, generator: Generators) -> None:
    """U[−bound, bound] in place; with a list of generators, seed i (the leading axis) from generator i only."""
    with torch.no_grad():
        if generator is None or isinstance(generator, torch.Generator):
            param.uniform_(-bound, bound, generator=generator)
            return
        gens = list(generator)
        if len(gens) != param.shape[0]:
            raise ConfigError(f"got {len(gens)} generators for {param.shape[0]} seeds")
        for p, g in zip(param, gens):
            p.uniform_(-bound, bound, generator=g)


class SeedConv2d(nn.Module):
    """S independent ``nn.Conv2d``: (S, B, in, H, W) -> (S, B, out, H', W').

    A loop over the seeds: on our CPU (S = 8, B = 64, the conv stack on 56 × 56 images, forward and backward) it
    took 28 ms against 51 ms for one grouped convolution (groups = S) and 165 ms for unfold + batched matmul.
    """

    def __init__(self, num_seeds: int, in_channels: int, out_channels: int, kernel_size: int, stride: int):
        super().__init__()
        self.num_seeds, self.stride = num_seeds, stride
        self.weight = nn.Parameter(torch.empty(num_seeds, out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(num_seeds, out_channels))
        self.reset_parameters()

    def reset_parameters(self, generator: Generators = None) -> None:
        bound = 1.0 / math.sqrt(self.weight[0, 0].numel())  # nn.Conv2d's default: U[±1/√fan_in]
        _fill_uniform(self.weight, bound, generator)
        _fill_uniform(self.bias, bound, generator)

    def forward(self, x: Tensor) -> Tensor:
        conv = torch.nn.functional.conv2d
        return torch.stack([conv(x[s], self.weight[s], self.bias[s], stride=self.stride)
                            for s in range(self.num_seeds)])


class SeedLSTMCell(SeedRNN):
    """One step of an LSTM with a seed axis (``nn.LSTMCell``'s equations and initialisation)."""

    def __init__(self, input_size: int, hidden_size: int, *, num_seeds: int):
        super().__init__("lstm", input_size, hidden_size, num_seeds=num_seeds)

    def step(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:  # (S, B, in), (S, B, H) x2
        gates = torch.baddbmm(self.bias_ih + self.bias_hh, x, self.weight_ih.transpose(1, 2))
        gates = torch.baddbmm(gates, h, self.weight_hh.transpose(1, 2))  # (S, B, 4H)
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class ActorCritic(nn.Module):
    """The agent ``name`` ("a2c-lstm" or "a2c-nac", see the module docstring) for S seeds.

    ``step(obs, state, first)`` advances all S·B episodes one step: ``obs`` is the vector environment's
    observation dict with N = S·B rows (seed-major: row s·B + b is episode b of seed s), ``first`` (S, B) marks
    episodes that start at this observation (their state is zeroed first). Returns action logits (S, B, 5),
    values (S, B) and the new state.
    """

    def __init__(self, name: str, env_config: TimeGridConfig, num_seeds: int, config: AgentConfig | None = None):
        super().__init__()
        if name not in AGENTS:
            raise ConfigError(f"unknown agent {name!r}; choose from: {', '.join(AGENTS)}")
        if not isinstance(num_seeds, int) or num_seeds < 1:
            raise ConfigError(f"num_seeds must be a positive integer, got {num_seeds!r}")
        self.name, self.env_config, self.num_seeds = name, env_config, num_seeds
        self.config = cfg = config or AgentConfig()
        S, H = num_seeds, cfg.hidden_size
        self.observation = env_config.observation
        if self.observation == "grid":
            self.conv = nn.ModuleList()
            flat = env_config.size * env_config.size * 2
        else:
            self.conv = nn.ModuleList([SeedConv2d(S, 3, 16, 8, 4), SeedConv2d(S, 16, 32, 4, 2)])
            side = (env_config.image_size - 8) // 4 + 1
            side = (side - 4) // 2 + 1
            if side < 1:
                raise ConfigError(f"image_size {env_config.image_size} is too small for the conv stack (>= 16)")
            flat = 32 * side * side
        self.vision = get_unit("linear", flat, cfg.vision_size, num_seeds=S, bias=True)
        self.uses_nac = name == "a2c-nac"
        nac_out = cfg.nac_size if self.uses_nac else 0
        if self.uses_nac and cfg.nac_wiring == "paper":
            self.nac = get_unit("nac", 1 + H, cfg.nac_size, num_seeds=S)  # [i_t, h_{t−1}] -> n_t
        elif self.uses_nac:
            self.nac = RecurrentCell("nac", 2, cfg.nac_size, num_seeds=S)  # [i_t, 1, n_{t−1}] -> n_t
        self.lstm = SeedLSTMCell(cfg.vision_size + 1 + nac_out, H, num_seeds=S)
        self.policy = get_unit("linear", H, len(MOVES), num_seeds=S, bias=True)
        self.value = get_unit("linear", H, 1, num_seeds=S, bias=True)
        self.reset_parameters()

    @property
    def counter_size(self) -> int:
        return self.config.nac_size if self.uses_nac and self.config.nac_wiring == "counter" else 0

    def reset_parameters(self, generator: Generators = None) -> None:
        """Initialise every layer (see the module docstring); a list of S generators draws seed i from its own."""
        for layer in [*self.conv, self.vision, *([self.nac] if self.uses_nac else []), self.lstm, self.policy,
                      self.value]:
            layer.reset_parameters(generator)
        with torch.no_grad():
            self.policy.weight.mul_(self.config.policy_init_scale)
            self.policy.b.zero_()

    def initial_state(self, batch_size: int) -> State:
        """Zero state (h, c, n), each (S, B, ·)."""
        S, H = self.num_seeds, self.config.hidden_size
        p = self.policy.weight
        return (p.new_zeros(S, batch_size, H), p.new_zeros(S, batch_size, H),
                p.new_zeros(S, batch_size, self.counter_size))

    def features(self, obs: dict[str, np.ndarray]) -> tuple[Tensor, Tensor]:
        """Observation dict (N = S·B rows) -> vision features (S, B, vision_size) and instruction (S, B, 1)."""
        S = self.num_seeds
        vision = torch.from_numpy(np.ascontiguousarray(obs[self.observation]))
        instruction = torch.from_numpy(np.asarray(obs["instruction"]))
        n = vision.shape[0]
        if n % S or instruction.shape != (n, 1):
            raise ShapeError(f"{self.name}: expected N = S·B observation rows with S={S} and instruction (N, 1); "
                             f"got {tuple(vision.shape)} and {tuple(instruction.shape)}")
        B = n // S
        if self.observation == "grid":
            x = vision.reshape(S, B, -1).float()  # (S, B, size·size·2)
        else:
            # (S·B, H, W, 3) uint8 -> (S, B, 3, H, W) in [0, 1]
            x = vision.reshape(S, B, *vision.shape[1:]).permute(0, 1, 4, 2, 3).float().div_(255)
            for conv in self.conv:
                x = torch.relu(conv(x))
            x = x.flatten(2)  # (S, B, 32·side²)
        v = torch.relu(self.vision(x))
        i = instruction.reshape(S, B, 1).float() * self.config.instruction_scale
        return v, i

    def step(self, obs: dict[str, np.ndarray], state: State, first: Tensor | np.ndarray | None = None):
        """One step of every episode: -> logits (S, B, 5), value (S, B), new state."""
        v, i = self.features(obs)
        h, c, n = state
        if first is not None:
            keep = (~torch.as_tensor(first, dtype=torch.bool)).to(h.dtype).unsqueeze(-1)  # (S, B, 1)
            h, c, n = h * keep, c * keep, n * keep
        if not self.uses_nac:
            x = torch.cat([v, i], dim=-1)
        elif self.config.nac_wiring == "paper":
            x = torch.cat([v, i, self.nac(torch.cat([i, h], dim=-1))], dim=-1)
        else:
            if self.config.counter_weights is None:
                n = self.nac(torch.cat([i, torch.ones_like(i)], dim=-1), n)
            else:
                a, b, w = self.config.counter_weights
                n = a * i + b + w * n
            x = torch.cat([v, i, n], dim=-1)
        h, c = self.lstm.step(x, h, c)
        return self.policy(h), self.value(h).squeeze(-1), (h, c, n)


def build_agent(name: str, env_config: TimeGridConfig, num_seeds: int, config: AgentConfig | None = None,
                generator: Generators = None) -> ActorCritic:
    """An agent for S = ``num_seeds`` seeds, initialised from ``generator`` (one per seed for independent seeds:
    ``nalm.engine.task.torch_generators(seeds, "init")``)."""
    agent = ActorCritic(name, env_config, num_seeds, config)
    if generator is not None:
        agent.reset_parameters(generator)
    return agent
