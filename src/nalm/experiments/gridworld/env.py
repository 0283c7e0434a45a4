"""The time-tracking grid world of Trask et al. (2018, §4.5, Figure 5) as a gymnasium environment.

Each episode places a red target square at random on a ``size`` × ``size`` grid and the grey agent on another
square; at t = 0 the agent also receives an integer instruction T, the exact step at which it must first step onto
the target. The whole grid is observed every step (a 56 × 56 RGB image, or the compact one-hot grid).

Time and reward (our choice; the paper gives neither m, the penalty nor the limit L):

- t counts the actions taken: the first action moves the agent at t = 1. The agent *arrives* at step t when its
  t-th action puts it on the target; the episode then terminates with reward
  ``r = m`` if t = T, else ``max(floor, m − slope · |t − T|)`` (m = 1, slope = 0.5, floor = −1 by default:
  one step early or late earns 0.5, two 0, four or more −1).
- Without arrival the episode terminates at the step limit L = T + ``extra_steps`` (5) with reward
  ``timeout_penalty`` (−1). Every other step earns 0.
- The limit is part of the task (the agent is told T and may count), so it is reported as ``terminated``, never
  ``truncated``. Training draws T uniformly from [8, 12]: 8 is the farthest a target can be on 5 × 5 (corner to
  corner), so every episode can be finished on time. T below the distance is allowed (e.g. small test settings)
  but then cannot be met.

Actions: 0 stay, 1 up, 2 down, 3 left, 4 right; a move into the wall leaves the agent where it is.

Observation (a ``Dict`` space): ``"image"`` (``image_size`` × ``image_size`` × 3 uint8; black background, the target
red, the agent grey; an agent standing on the target is drawn as a grey square inside the red one) or, with
``observation="grid"``, ``"grid"`` (size × size × 2 uint8 one-hot: channel 0 the agent, channel 1 the target);
and ``"instruction"`` ((1,) int64): T at t = 0 and 0 afterwards (``instruction_every_step=True`` repeats it).

>>> import nalm.experiments.gridworld.env, gymnasium
>>> env = gymnasium.make("nalm/TimeGrid-v0", observation="grid")
>>> obs, info = env.reset(seed=0)
>>> obs["grid"].shape, int(obs["instruction"][0]) == info["instruction"]
((5, 5, 2), True)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from nalm.errors import ConfigError, ShapeError

#: Action index -> (row step, column step): stay, up, down, left, right.
MOVES = np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]], dtype=np.int64)
ACTION_NAMES = ("stay", "up", "down", "left", "right")
RED = np.array([255, 0, 0], dtype=np.uint8)
GREY = np.array([128, 128, 128], dtype=np.uint8)
OBSERVATIONS = ("image", "grid")


@dataclass(frozen=True)
class TimeGridConfig:
    """Options of the grid world; every field is also a keyword argument of the environments."""

    size: int = 5
    #: Training instructions: T ~ U{min_instruction, ..., max_instruction} (the paper trains from 8).
    min_instruction: int = 8
    max_instruction: int = 12
    #: A fixed T for every episode (evaluation), instead of the range.
    instruction: int | None = None
    #: Upper bound of the instruction's observation space (evaluation goes to T = 30).
    instruction_limit: int = 100
    #: Step limit L = T + extra_steps.
    extra_steps: int = 5
    reward_on_time: float = 1.0
    reward_slope: float = 0.5
    reward_floor: float = -1.0
    timeout_penalty: float = -1.0
    observation: str = "image"
    image_size: int = 56
    instruction_every_step: bool = False

    def __post_init__(self) -> None:
        def positive_int(name, low=1):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < low:
                raise ConfigError(f"TimeGrid: {name} must be an integer >= {low}, got {v!r}")

        positive_int("size", 2)
        for name in ("min_instruction", "max_instruction", "instruction_limit", "extra_steps"):
            positive_int(name)
        if self.min_instruction > self.max_instruction:
            raise ConfigError(f"TimeGrid: min_instruction {self.min_instruction} > max_instruction "
                              f"{self.max_instruction}")
        if self.instruction is not None:
            positive_int("instruction")
        top = max(self.max_instruction, self.instruction or 0)
        if top > self.instruction_limit:
            raise ConfigError(f"TimeGrid: instructions up to {top} exceed instruction_limit="
                              f"{self.instruction_limit}; raise instruction_limit")
        for name in ("reward_on_time", "reward_slope", "reward_floor", "timeout_penalty"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not np.isfinite(v):
                raise ConfigError(f"TimeGrid: {name} must be a finite number, got {v!r}")
        if self.reward_slope < 0:
            raise ConfigError(f"TimeGrid: reward_slope must be >= 0, got {self.reward_slope!r}")
        if self.reward_floor > self.reward_on_time:
            raise ConfigError(f"TimeGrid: reward_floor {self.reward_floor} exceeds reward_on_time "
                              f"{self.reward_on_time}")
        if self.observation not in OBSERVATIONS:
            raise ConfigError(f"TimeGrid: observation must be one of {OBSERVATIONS}, got {self.observation!r}")
        if not isinstance(self.image_size, int) or self.image_size < 3 * self.size:
            raise ConfigError(f"TimeGrid: image_size must be an integer >= 3 * size = {3 * self.size} "
                              f"(3 pixels per cell), got {self.image_size!r}")
        if not isinstance(self.instruction_every_step, bool):
            raise ConfigError(f"TimeGrid: instruction_every_step must be a bool, got {self.instruction_every_step!r}")

    @classmethod
    def build(cls, config: TimeGridConfig | None = None, **options) -> TimeGridConfig:
        """``config`` with ``options`` replaced; an unknown option is a ConfigError naming the allowed ones."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise ConfigError(f"TimeGrid: unknown option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(names))}")
        return dataclasses.replace(config or cls(), **options)

    def reward(self, t: np.ndarray, instruction: np.ndarray) -> np.ndarray:
        """The reward of arriving at step t with instruction T (arrays): m on time, else max(floor, m − slope·|t−T|)."""
        off = np.abs(t - instruction)
        late = np.maximum(self.reward_floor, self.reward_on_time - self.reward_slope * off)
        return np.where(off == 0, self.reward_on_time, late)

    def observation_space(self) -> spaces.Dict:
        """The Dict space of one environment's observation."""
        if self.observation == "image":
            vision = spaces.Box(0, 255, (self.image_size, self.image_size, 3), dtype=np.uint8)
        else:
            vision = spaces.Box(0, 1, (self.size, self.size, 2), dtype=np.uint8)
        return spaces.Dict({self.observation: vision,
                            "instruction": spaces.Box(0, self.instruction_limit, (1,), dtype=np.int64)})


def draw_episode(rng: np.random.Generator, config: TimeGridConfig) -> tuple[int, int, int]:
    """(T, target cell, agent cell) of a new episode from ``rng``, in one draw.

    Both environments start episodes through this function, so equal seeds give equal episodes. A fixed
    instruction still draws (and discards) T, so the placements do not depend on it.
    """
    cells = config.size * config.size
    t, target, agent = rng.integers([config.min_instruction, 0, 0], [config.max_instruction + 1, cells, cells - 1])
    agent += agent >= target  # any cell but the target's
    if config.instruction is not None:
        t = config.instruction
    return int(t), int(target), int(agent)


class GridPainter:
    """Draws batches of grids as RGB images: (N,) agent and target cells -> (N, H, W, 3) uint8."""

    def __init__(self, size: int, image_size: int):
        self.size, self.image_size = size, image_size
        cell = image_size // size
        offset = (image_size - cell * size) // 2
        inset = max(1, cell // 4)
        full, inner = [], []
        for k in range(size * size):
            r, c = divmod(k, size)
            top, left = offset + r * cell + 1, offset + c * cell + 1  # a 1-pixel black gap between cells
            rows, cols = np.arange(top, top + cell - 1), np.arange(left, left + cell - 1)
            full.append((rows[:, None] * image_size + cols[None, :]).ravel())
            rows, cols = rows[inset:-inset], cols[inset:-inset]
            inner.append((rows[:, None] * image_size + cols[None, :]).ravel())
        self.full = np.stack(full)  # (cells, P): flat pixel indices of each cell's square
        self.inner = np.stack(inner)  # (cells, p): its inset square

    def __call__(self, agent: np.ndarray, target: np.ndarray) -> np.ndarray:
        n = len(agent)
        img = np.zeros((n, self.image_size * self.image_size, 3), dtype=np.uint8)
        rows = np.arange(n)[:, None]
        img[rows, self.full[target]] = RED
        on = agent == target
        img[rows[~on], self.full[agent[~on]]] = GREY
        img[rows[on], self.inner[agent[on]]] = GREY
        return img.reshape(n, self.image_size, self.image_size, 3)


def one_hot_grid(agent: np.ndarray, target: np.ndarray, size: int) -> np.ndarray:
    """(N,) agent and target cells -> (N, size, size, 2) uint8: channel 0 the agent, channel 1 the target."""
    n = len(agent)
    grid = np.zeros((n, size * size, 2), dtype=np.uint8)
    grid[np.arange(n), agent, 0] = 1
    grid[np.arange(n), target, 1] = 1
    return grid.reshape(n, size, size, 2)


def move(cells: np.ndarray, actions: np.ndarray, size: int) -> np.ndarray:
    """Cells after the actions (arrays of N); a move into the wall stays put."""
    r, c = np.divmod(cells, size)
    step = MOVES[actions]
    return np.clip(r + step[:, 0], 0, size - 1) * size + np.clip(c + step[:, 1], 0, size - 1)


def oracle_actions(agent: np.ndarray, target: np.ndarray, elapsed: np.ndarray, instruction: np.ndarray,
                   size: int) -> np.ndarray:
    """The scripted on-time policy (arrays of N): walk (rows first) to a square next to the target, wait there,
    and step on when one step is left. Arrives exactly at T whenever T is at least the distance (and as soon as
    it can when T is already past); used by tests and the demo PNG."""
    ar, ac = np.divmod(agent, size)
    tr, tc = np.divmod(target, size)
    distance = np.abs(ar - tr) + np.abs(ac - tc)
    walk = (distance > 1) | (instruction - elapsed <= 1)
    toward = np.where(tr < ar, 1, np.where(tr > ar, 2, np.where(tc < ac, 3, np.where(tc > ac, 4, 0))))
    return np.where(walk, toward, 0)


class TimeGridEnv(gymnasium.Env):
    """The grid world of Figure 5 (Trask et al. 2018, §4.5); see the module docstring for the rules.

    Keyword arguments are the fields of :class:`TimeGridConfig` (or ``config=``). Reset options (one episode):
    ``instruction`` (T), ``agent`` and ``target`` (cells as (row, col)), for scripted and evaluation episodes;
    the episode's random draw is made anyway, so options never shift the random stream.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, render_mode: str | None = None, config: TimeGridConfig | None = None, **options: Any):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigError(f"TimeGrid: render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.config = TimeGridConfig.build(config, **options)
        self.render_mode = render_mode
        self.observation_space = self.config.observation_space()
        self.action_space = spaces.Discrete(len(MOVES))
        self._painter = GridPainter(self.config.size, self.config.image_size)
        self._state: tuple[int, int, int, int] | None = None  # (T, target, agent, t)

    def _cell(self, name: str, value) -> int:
        size = self.config.size
        try:
            r, c = (int(v) for v in value)
        except (TypeError, ValueError):
            raise ConfigError(f"TimeGrid: reset option {name} must be (row, col), got {value!r}") from None
        if not (0 <= r < size and 0 <= c < size):
            raise ConfigError(f"TimeGrid: reset option {name}={value!r} lies outside the {size} x {size} grid")
        return r * size + c

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        instruction, target, agent = draw_episode(self.np_random, self.config)
        options = dict(options or {})
        unknown = set(options) - {"instruction", "agent", "target"}
        if unknown:
            raise ConfigError(f"TimeGrid: unknown reset option(s) {sorted(unknown)}; "
                              "allowed: agent, instruction, target")
        if "instruction" in options:
            instruction = options["instruction"]
            if not isinstance(instruction, (int, np.integer)) or not 1 <= instruction <= self.config.instruction_limit:
                raise ConfigError(f"TimeGrid: instruction must be in [1, {self.config.instruction_limit}], "
                                  f"got {instruction!r}")
            instruction = int(instruction)
        if "target" in options:
            target = self._cell("target", options["target"])
        if "agent" in options:
            agent = self._cell("agent", options["agent"])
        if agent == target:
            raise ConfigError(f"TimeGrid: the agent must start off the target, both at cell {agent}")
        self._state = (instruction, target, agent, 0)
        return self._observation(), self._info()

    def step(self, action):
        if self._state is None:
            raise gymnasium.error.ResetNeeded("TimeGrid: call reset() before step()")
        if not self.action_space.contains(action):
            raise ShapeError(f"TimeGrid: action must be an integer in [0, {len(MOVES)}), got {action!r}")
        instruction, target, agent, t = self._state
        agent = int(move(np.array([agent]), np.array([int(action)]), self.config.size)[0])
        t += 1
        self._state = (instruction, target, agent, t)
        arrived = agent == target
        timeout = not arrived and t >= instruction + self.config.extra_steps
        if arrived:
            reward = float(self.config.reward(np.array(t), np.array(instruction)))
        else:
            reward = float(self.config.timeout_penalty) if timeout else 0.0
        info = self._info()
        info.update(arrived=arrived, on_time=arrived and t == instruction)
        return self._observation(), reward, bool(arrived or timeout), False, info

    def _observation(self) -> dict[str, np.ndarray]:
        instruction, target, agent, t = self._state
        shown = instruction if (t == 0 or self.config.instruction_every_step) else 0
        if self.config.observation == "image":
            vision = self._painter(np.array([agent]), np.array([target]))[0]
        else:
            vision = one_hot_grid(np.array([agent]), np.array([target]), self.config.size)[0]
        return {self.config.observation: vision, "instruction": np.array([shown], dtype=np.int64)}

    def _info(self) -> dict[str, Any]:
        instruction, target, agent, t = self._state
        (ar, ac), (tr, tc) = divmod(agent, self.config.size), divmod(target, self.config.size)
        return {"instruction": instruction, "elapsed": t, "distance": abs(ar - tr) + abs(ac - tc),
                "agent": (ar, ac), "target": (tr, tc)}

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        if self._state is None:
            raise gymnasium.error.ResetNeeded("TimeGrid: call reset() before render()")
        _, target, agent, _ = self._state
        return self._painter(np.array([agent]), np.array([target]))[0]

    def oracle_action(self) -> int:
        """The scripted on-time action in the current state (see :func:`oracle_actions`)."""
        instruction, target, agent, t = self._state
        return int(oracle_actions(np.array([agent]), np.array([target]), np.array([t]), np.array([instruction]),
                                  self.config.size)[0])


# -- pictures -----------------------------------------------------------------------------------------------------
def render_frames(env: gymnasium.Env, n: int, *, seed: int | None = None, policy="oracle") -> list[np.ndarray]:
    """Up to ``n`` RGB frames (uint8, H × W × 3) of one episode: the start, then one per step until it ends.

    ``env`` (possibly wrapped) must have ``render_mode="rgb_array"``. ``policy``: ``"oracle"`` (the scripted
    on-time walk), ``"random"`` (uniform actions seeded by ``seed``), or a callable ``obs -> action``.
    """
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"render_frames: n must be a positive integer, got {n!r}")
    if env.render_mode != "rgb_array":
        raise ConfigError(f"render_frames needs an environment made with render_mode='rgb_array', "
                          f"got render_mode={env.render_mode!r}")
    if policy == "random":
        env.action_space.seed(seed)
        act = lambda obs: env.action_space.sample()  # noqa: E731
    elif policy == "oracle":
        act = lambda obs: env.unwrapped.oracle_action()  # noqa: E731
    elif callable(policy):
        act = policy
    else:
        raise ConfigError(f"render_frames: policy must be 'oracle', 'random' or a callable, got {policy!r}")
    obs, _ = env.reset(seed=seed)
    frames = [env.render()]
    while len(frames) < n:
        obs, _, terminated, truncated, _ = env.step(act(obs))
        frames.append(env.render())
        if terminated or truncated:
            break
    return frames


def save_frames_png(frames: list[np.ndarray], path, *, titles: list[str] | None = None, dpi: int = 100) -> None:
    """Write frames side by side to a PNG (matplotlib's Agg canvas, no pyplot), each under its title."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not frames:
        raise ConfigError("save_frames_png: no frames to write")
    titles = titles if titles is not None else [f"t = {i}" for i in range(len(frames))]
    if len(titles) != len(frames):
        raise ConfigError(f"save_frames_png: {len(titles)} titles for {len(frames)} frames")
    fig = Figure(figsize=(1.3 * len(frames), 1.6))
    FigureCanvasAgg(fig)
    for i, (frame, title) in enumerate(zip(frames, titles)):
        ax = fig.add_subplot(1, len(frames), i + 1)
        ax.imshow(frame, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=dpi, format="png")


def episode_png(path, *, seed: int = 0, frames: int = 20, policy="oracle", **options: Any) -> list[np.ndarray]:
    """Play one episode of a ``TimeGridEnv(**options)`` and write up to ``frames`` of it to ``path`` (for
    ``nalm sample gridworld --png FILE``); returns the frames."""
    env = TimeGridEnv(render_mode="rgb_array", **options)
    shots = render_frames(env, frames, seed=seed, policy=policy)
    instruction = env._info()["instruction"]
    save_frames_png(shots, path, titles=[f"t = {i} (T = {instruction})" if i == 0 else f"t = {i}"
                                         for i in range(len(shots))])
    return shots


ENV_ID = "nalm/TimeGrid-v0"

if ENV_ID not in gymnasium.registry:
    # No max_episode_steps: the environment ends every episode itself, at the step limit T + extra_steps.
    gymnasium.register(id=ENV_ID, entry_point=f"{__name__}:TimeGridEnv")
