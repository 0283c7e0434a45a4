"""Figure 5 of Trask et al. (2018): the time-tracking grid world and its actor-critic agents.

Running it needs the optional extra ``nalm[rl]`` (gymnasium); the experiment registers without it, and
:mod:`.env` registers the gymnasium environment ``nalm/TimeGrid-v0`` when imported.

- :mod:`.env`: :class:`~.env.TimeGridEnv` (a ``gymnasium.Env``), its config and rendering helpers.
- :mod:`.vector`: many episodes as numpy arrays (the training form).
- :mod:`.agents`: the actor-critic agents ``a2c-lstm`` and ``a2c-nac`` with a seed axis.
- :mod:`.a2c`, :mod:`.a3c`: A2C (per-seed losses and clipping) and the paper's Hogwild A3C.
- :mod:`.loop`: one run: training windows, curves, TensorBoard, checkpoints and the evaluation per T.
- :mod:`.experiment`, :mod:`.report`, :mod:`.figures`: the experiment, its report section and Figure 5.
"""
