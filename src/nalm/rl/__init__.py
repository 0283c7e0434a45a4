"""Reinforcement learning: the time-tracking grid world of Trask et al. (2018, §4.5, Figure 5) and its agents.

Needs the optional extra ``nalm[rl]`` (gymnasium); ``import nalm`` never imports this package. Importing it
registers the gymnasium environment ``nalm/TimeGrid-v0`` (once).

- :mod:`nalm.rl.env`: :class:`TimeGridEnv` (a ``gymnasium.Env``), its config, rendering helpers.
- :mod:`nalm.rl.vector`: :class:`TimeGridVectorEnv`, many episodes as numpy arrays (the training form).
- :mod:`nalm.rl.agents`: the actor-critic agents ``a2c-lstm`` and ``a2c-nac`` with a seed axis.
- :mod:`nalm.rl.a2c`: A2C training (per-seed losses and gradient clipping) and evaluation per instruction T.
- :mod:`nalm.rl.a3c`: the paper's A3C, Hogwild workers on one shared agent (imported on use).
- :mod:`nalm.rl.loop`: one run of the ``gridworld`` experiment: training windows, curves, TensorBoard, checkpoints
  and resume through the results store, the evaluation per T (imported on use).
- :mod:`nalm.rl.report`, :mod:`nalm.rl.figures`: the experiment's report section and Figure 5 (imported on use).
"""

from __future__ import annotations

import gymnasium

from .a2c import A2C, A2CConfig, evaluate
from .agents import AGENTS, ActorCritic, AgentConfig, build_agent
from .env import TimeGridConfig, TimeGridEnv, episode_png, render_frames, save_frames_png
from .vector import TimeGridVectorEnv

ENV_ID = "nalm/TimeGrid-v0"

if ENV_ID not in gymnasium.registry:
    # No max_episode_steps: the environment ends every episode itself, at the step limit T + extra_steps.
    gymnasium.register(id=ENV_ID, entry_point="nalm.rl.env:TimeGridEnv")

__all__ = ["ENV_ID", "TimeGridConfig", "TimeGridEnv", "TimeGridVectorEnv", "render_frames", "save_frames_png",
           "episode_png", "AGENTS", "AgentConfig", "ActorCritic", "build_agent", "A2C", "A2CConfig", "evaluate"]
