"""Seed-axis building blocks that experiments share.

- :mod:`.ensemble`: :class:`~.ensemble.Ensemble`, S copies of any module run as one program (``torch.func``) or
  as a loop over seeds.
- :mod:`.models`: MLP baselines, the seed-batched RNNs (:class:`~.models.SeedRNN`), networks of two arithmetic units
  and the model names the experiments accept (``build_model``).
"""

from .ensemble import Ensemble

__all__ = ["Ensemble"]
