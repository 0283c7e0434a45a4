"""The small abstract base of every task."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


#: The bit generator of every random stream: SFC64 passes the standard statistical batteries (BigCrush,
#: PractRand), and a step's training data took 1.47 ms from it against 1.99 ms from numpy's default PCG64
#: (benchmarks/kernels.py) — the data are the largest cost of a seed-batched step.
BIT_GENERATOR = np.random.SFC64


def seed_generators(seeds: Sequence[int], stream: str) -> list[np.random.Generator]:
    """One independent numpy generator per model seed, for one named stream ("data", "init", "subsets").

    Seed s of stream k depends only on (s, k): a run of S seeds draws exactly what S runs of one seed would.
    """
    key = sum(ord(c) << (8 * i) for i, c in enumerate(stream[:8]))
    return [np.random.Generator(BIT_GENERATOR([s, key])) for s in seeds]


def evaluation_generator(evaluation_seed: int, index: int) -> np.random.Generator:
    """The generator of fixed evaluation set ``index``; its seed words (2³² + e, index) never meet a model seed's."""
    return np.random.Generator(BIT_GENERATOR([2**32 + evaluation_seed, index]))


def torch_generators(seeds: Sequence[int], stream: str) -> list[torch.Generator]:
    """One torch generator per model seed (for parameter initialisation), derived like :func:`seed_generators`."""
    return [torch.Generator().manual_seed(int(g.integers(2**63 - 1))) for g in seed_generators(seeds, stream)]


class Task(ABC):
    """A supervised task with a seed axis.

    ``sample`` draws a fresh training batch for every seed from that seed's own generator; ``evaluation_sets``
    returns the fixed sets (drawn from generators of their own, never the training stream).
    """

    name: str
    input_size: int
    output_size: int

    @abstractmethod
    def sample(self, bitgens: Sequence[np.random.BitGenerator], batch_size: int,
               buffer: np.ndarray | None = None) -> tuple[Tensor, Tensor, np.ndarray]:
        """A fresh training batch per seed, seed i drawn from ``bitgens[i]`` alone.

        Returns x (S, B, *input), y (S, B, output_size) and a buffer to pass back on the next call (x may be a
        view of it, so use x before the next call).
        """

    @abstractmethod
    def evaluation_sets(self, seeds: Sequence[int]) -> dict[str, tuple[Tensor, Tensor]]:
        """Fixed sets by name ("interpolation", "extrapolation"): x (S or 1, N, *input), y (S, N, output)."""

    def artifacts(self, model) -> dict:
        """Results beyond the per-seed statistics (e.g. a curve for a figure), stored as JSON."""
        return {}
