"""The small abstract base of every task."""

from __future__ import annotations

from abc import ABC
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


def seed_order(seeds: Sequence[int], step: int, batch_size: int, size: int, stream: str = "order") -> np.ndarray:
    """Indices of training batch ``step`` (1-based) into a fixed data set of ``size`` rows, per seed: (S, B).

    Each seed walks its own random permutation of the data set, a new one every epoch (the last partial batch of
    an epoch is dropped; a batch larger than the data set is the whole permutation). The order is a pure function
    of (seed, epoch), so a resumed run needs no state beyond the step.
    """
    per_epoch = max(1, size // batch_size)
    epoch, j = divmod(step - 1, per_epoch)
    key = sum(ord(c) << (8 * i) for i, c in enumerate(stream[:8]))
    out = []
    for s in seeds:
        perm = np.random.Generator(BIT_GENERATOR([s, key, epoch])).permutation(size)
        out.append(perm[j * batch_size:(j + 1) * batch_size])
    return np.stack(out)


class Task(ABC):
    """A supervised task with a seed axis: what the trainer (:func:`nalm.engine.train.train`) needs of an experiment.

    Training data: ``batch(step, bitgens, batch_size, buffer)`` gives each seed its own batch. The default draws a
    fresh batch per seed from that seed's own generator (``sample``); a task over a fixed data set overrides
    ``batch`` with :func:`seed_order` instead.

    Evaluation: ``evaluate(model, num_seeds)`` returns named per-seed metrics, (S,) each. The default computes the
    MSE on each fixed set of ``evaluation_sets`` (``<set>_mse``) and the sparsity error of the model's units. The
    best step is the one with the lowest ``selection_metric``; a seed with a non-finite value of any of
    ``finite_metrics`` is marked diverged; with a ``threshold``, a seed succeeds when its ``success_metric`` at
    the best step is below it, and "solved at" is the first evaluation where it was.
    """

    name: str
    input_size: int
    output_size: int
    selection_metric = "interpolation_mse"
    finite_metrics: tuple[str, ...] = ("interpolation_mse", "extrapolation_mse")
    success_metric: str | None = "extrapolation_mse"
    threshold: float | None = None

    def sample(self, bitgens: Sequence[np.random.BitGenerator], batch_size: int,
               buffer: np.ndarray | None = None) -> tuple[Tensor, Tensor, np.ndarray]:
        """A fresh training batch per seed, seed i drawn from ``bitgens[i]`` alone.

        Returns x (S, B, *input), y (S, B, output_size) and a buffer to pass back on the next call (x may be a
        view of it, so use x before the next call).
        """
        raise NotImplementedError(f"{type(self).__name__} draws no per-step data; override batch()")

    def batch(self, step: int, bitgens: Sequence[np.random.BitGenerator], batch_size: int, buffer=None):
        """Training batch ``step`` (1-based): (x, y, buffer); by default a fresh draw from ``sample``."""
        return self.sample(bitgens, batch_size, buffer)

    def loss(self, output, y) -> Tensor:
        """The per-seed training loss, (S,): mean squared error unless a task says otherwise."""
        return (output - y).pow(2).flatten(1).mean(dim=1)

    def evaluation_sets(self, seeds: Sequence[int] | None = None) -> dict[str, tuple[Tensor, Tensor]]:
        """Fixed sets by name ("interpolation", "extrapolation"): x (S or 1, N, *input), y (S, N, output)."""
        raise NotImplementedError(f"{type(self).__name__} has no fixed regression sets; override evaluate()")

    def evaluate(self, model, num_seeds: int, device=None) -> dict[str, Tensor]:
        """Per-seed metrics (S,): ``<set>_mse`` on every fixed set (drawn once, then reused), ``sparsity_error``, and
        the units' diagnostics on the first set (:mod:`nalm.engine.diagnostics`)."""
        from .diagnostics import collect
        from .metrics import evaluate, sparsity

        if getattr(self, "_sets", None) is None:
            self._sets = self.evaluation_sets()
        metrics = {f"{name}_mse": evaluate(model, x, y, num_seeds, device=device) for name, (x, y) in self._sets.items()}
        metrics["sparsity_error"] = sparsity(model, num_seeds)
        x, _ = next(iter(self._sets.values()))
        return {**metrics, **collect(model, x, num_seeds, device=device)}

    def artifacts(self, model) -> dict:
        """Results beyond the per-seed statistics (e.g. a curve for a figure), stored as JSON."""
        return {}
