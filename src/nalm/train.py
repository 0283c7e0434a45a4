"""The seed-batched trainer: data -> model -> loss -> step -> evaluate, for S seeds as one tensor program.

Every seed is an independent model: its own initialisation stream, its own fresh training batch each step, its
own loss. The losses are summed for one backward pass (the gradient of a sum hands each seed exactly its own
gradient) and Adam is elementwise, so seed i trains exactly as it would alone. A seed whose loss turns NaN or
infinite is marked diverged and masked out; the others go on.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from . import functional as F
from .errors import ConfigError
from .models import arithmetic_units
from .tasks.base import Task, seed_generators, torch_generators


@dataclass(frozen=True)
class Regularizer:
    """λ(t) = scale · clamp((t − start) / (end − start), 0, 1): the linear ramp of Madsen & Johansen (2020)."""

    scale: float
    start: int
    end: int

    def __post_init__(self) -> None:
        if self.scale < 0 or self.start < 0 or self.end < self.start:
            raise ConfigError(f"regulariser needs scale >= 0 and 0 <= start <= end, got {self}")

    def __call__(self, step: int) -> float:
        if step < self.start:
            return 0.0
        if step >= self.end:
            return self.scale
        return self.scale * (step - self.start) / (self.end - self.start)

    @classmethod
    def parse(cls, text: str) -> tuple[str, "Regularizer"]:
        """Parse ``unit=scale:start:end`` (e.g. ``nmu=10:10000:20000``)."""
        try:
            unit, rest = text.split("=")
            scale, start, end = rest.split(":")
            return unit, cls(float(scale), int(float(start)), int(float(end)))
        except ValueError:
            raise ConfigError(f"cannot parse regulariser {text!r}: expected unit=scale:start:end, "
                              f"e.g. nmu=10:10000:20000") from None


#: SPEC §3: NAU λ̂ = 0.01 from 5·10³ to 5·10⁴; NMU λ̂ = 10 from 10⁶ to 2·10⁶; other units none.
DEFAULT_REGULARIZERS = {"nau": Regularizer(0.01, 5_000, 50_000), "nmu": Regularizer(10.0, 1_000_000, 2_000_000)}


@dataclass(frozen=True)
class TrainConfig:
    """How to train; all fields are stored with the results."""

    iterations: int = 50_000
    batch_size: int = 128
    learning_rate: float = 1e-3
    eval_every: int = 1000
    seeds: int = 10
    first_seed: int = 0
    #: Unit name -> (scale, start, end); units not listed get no regulariser.
    regularizers: dict = field(default_factory=lambda: {k: asdict(v) for k, v in DEFAULT_REGULARIZERS.items()})

    def __post_init__(self) -> None:
        for name in ("iterations", "batch_size", "eval_every", "seeds"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be positive, got {self.learning_rate!r}")
        for unit, r in self.regularizers.items():
            Regularizer(**r)

    @property
    def seed_ids(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))


@dataclass
class TrainResult:
    records: list[dict]
    curves: list[tuple]
    model: nn.Module
    seconds: float


def make_optimizer(model: nn.Module, learning_rate: float) -> torch.optim.Optimizer:
    """Adam, multi-tensor (``foreach``): one kernel per operation over all parameters instead of one per parameter.

    Not the fused CPU kernel: it rounds a stacked (S, ...) parameter differently from the same values held as S
    separate parameters, so seed i of a batched run would drift from the same seed trained alone (NALU amplifies
    it past 1e-6 within a hundred steps); the multi-tensor form keeps them equal.
    """
    return torch.optim.Adam(model.parameters(), lr=learning_rate, foreach=True)


def per_seed_mse(pred: Tensor, y: Tensor) -> Tensor:
    """(S, B, out), (S, B, out) -> (S,)."""
    return (pred - y).pow(2).mean(dim=(-2, -1))


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, num_seeds: int, max_elements: int = 16_000_000) -> Tensor:
    """Per-seed MSE (float64) on a fixed set x (1 or S, N, ...) with targets y (1 or S, N, out), in chunks."""
    S, N = num_seeds, y.shape[1]
    y = y.expand((S,) + y.shape[1:])
    per_row = S * max(1, math.prod(x.shape[2:]))
    chunk = max(1, max_elements // per_row)
    sse = torch.zeros(S, dtype=torch.float64)
    for i in range(0, N, chunk):
        xc = x[:, i:i + chunk]
        pred = model(xc.expand((S,) + xc.shape[1:]))
        sse += (pred.double() - y[:, i:i + chunk].double()).pow(2).sum(dim=(-2, -1))
    return sse / (N * y.shape[-1])


def sparsity(model: nn.Module, num_seeds: int) -> Tensor:
    """Max sparsity error over the model's arithmetic units that have one weight matrix; NaN if none."""
    errors = [F.sparsity_error(u.weight.detach()) for u in arithmetic_units(model) if isinstance(
        getattr(u, "weight", None), Tensor)]
    if not errors:
        return torch.full((num_seeds,), float("nan"), dtype=torch.float64)
    return torch.stack(errors).amax(dim=0).double()


@dataclass
class Hooks:
    """The training hooks a model's modules offer: regularisers with their schedules, and post-step constraints."""

    regularized: list
    constrained: list

    @classmethod
    def of(cls, model: nn.Module, regularizers: dict) -> "Hooks":
        regularized = [(m, Regularizer(**regularizers[m.unit_name])) for m in model.modules()
                       if hasattr(m, "regularization_loss") and getattr(m, "unit_name", None) in regularizers]
        return cls(regularized, [m for m in model.modules() if hasattr(m, "post_step")])


def training_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor, step: int,
                  hooks: Hooks, alive: Tensor) -> Tensor:
    """One step for all seeds: per-seed loss (MSE + λ(step)·R), one backward of their sum, Adam, constraints.

    Seeds whose loss is not finite are cleared from ``alive`` (in place) and contribute nothing from then on.
    Returns the per-seed losses (S,).
    """
    loss = per_seed_mse(model(x), y)
    for module, schedule in hooks.regularized:
        lam = schedule(step)
        if lam:
            loss = loss + lam * module.regularization_loss()
    alive &= torch.isfinite(loss)
    optimizer.zero_grad(set_to_none=True)
    torch.where(alive, loss, torch.zeros_like(loss)).sum().backward()
    optimizer.step()
    for module in hooks.constrained:
        module.post_step()
    return loss.detach()


def _plain(state):
    """A bit generator's state with its numpy arrays as lists, so that a weights-only checkpoint can hold it."""
    if isinstance(state, dict):
        return {k: _plain(v) for k, v in state.items()}
    return state.tolist() if isinstance(state, np.ndarray) else state


class _Progress:
    """A tqdm bar on a terminal (when tqdm is installed); silent otherwise."""

    def __init__(self, total: int, initial: int, desc: str, enabled: bool):
        self.bar = None
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step", leave=False, dynamic_ncols=True)

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def train(model: nn.Module, task: Task, config: TrainConfig, *, threshold: float | None = None,
          store=None, key: str | None = None, progress: bool = False, desc: str = "") -> TrainResult:
    """Train ``model`` (S stacked seeds) on ``task``; checkpoint into ``store`` under ``key`` after every evaluation.

    When ``store`` already holds a checkpoint for ``key`` the run resumes from it and ends with the same numbers
    as an uninterrupted run.
    """
    t0 = time.perf_counter()
    seeds = config.seed_ids
    S = len(seeds)
    model.reset_parameters(torch_generators(seeds, "init"))
    optimizer = make_optimizer(model, config.learning_rate)
    bitgens = [g.bit_generator for g in seed_generators(seeds, "data")]
    sets = task.evaluation_sets()
    hooks = Hooks.of(model, config.regularizers)

    nan = torch.full((S,), float("nan"), dtype=torch.float64)
    st = {"best_interpolation": torch.full((S,), float("inf"), dtype=torch.float64),
          "best_step": torch.full((S,), -1, dtype=torch.long), "extrapolation_at_best": nan.clone(),
          "interpolation_at_best": nan.clone(), "sparsity_at_best": nan.clone(),
          "solved_at": torch.full((S,), -1, dtype=torch.long), "alive": torch.ones(S, dtype=torch.bool),
          "diverged_at": torch.full((S,), -1, dtype=torch.long), "interpolation_init": nan.clone(),
          "extrapolation_init": nan.clone()}
    step = 0
    if store is not None and key is not None and (ckpt := store.load_checkpoint(key)) is not None:
        step, saved = ckpt
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        for g, s in zip(bitgens, saved["rng"]):
            g.state = s
        st = saved["bookkeeping"]

    curves: list[tuple] = []
    unsaved: list[tuple] = []

    def evaluate_now(step: int) -> None:
        model.eval()
        errors = {name: evaluate(model, x, y, S) for name, (x, y) in sets.items()}
        model.train()
        interp, extrap = errors["interpolation"], errors["extrapolation"]
        sp = sparsity(model, S)
        st["alive"] &= torch.isfinite(interp) & torch.isfinite(extrap)
        st["diverged_at"][~st["alive"] & (st["diverged_at"] < 0)] = step  # first evaluation that sees it dead
        if step == 0:
            st["interpolation_init"], st["extrapolation_init"] = interp.clone(), extrap.clone()
        better = st["alive"] & (interp < st["best_interpolation"])
        for name, value in (("best_interpolation", interp), ("interpolation_at_best", interp),
                            ("extrapolation_at_best", extrap), ("sparsity_at_best", sp)):
            st[name] = torch.where(better, value, st[name])
        st["best_step"][better] = step
        if threshold is not None:
            solved = st["alive"] & (extrap < threshold) & (st["solved_at"] < 0)
            st["solved_at"][solved] = step
        rows = [(s, step, float(a), float(b), float(c)) for s, a, b, c in
                zip(seeds, interp.tolist(), extrap.tolist(), sp.tolist())]
        curves.extend(rows)
        unsaved.extend(rows)

    def checkpoint(step: int) -> None:
        if store is None or key is None:
            return
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "rng": [_plain(g.state) for g in bitgens], "bookkeeping": st}
        store.save_checkpoint(key, step, state, unsaved)
        unsaved.clear()

    if step == 0:
        evaluate_now(0)
        checkpoint(0)
    bar = _Progress(config.iterations, step, desc, progress)
    buffer = None
    while step < config.iterations:
        step += 1
        x, y, buffer = task.sample(bitgens, config.batch_size, buffer=buffer)
        training_step(model, optimizer, x, y, step, hooks, st["alive"])
        if step % config.eval_every == 0 or step == config.iterations:
            evaluate_now(step)
            checkpoint(step)
            bar.update(config.eval_every if step % config.eval_every == 0 else step % config.eval_every)
    bar.close()

    records = []
    for i, s in enumerate(seeds):
        alive = bool(st["alive"][i])
        extrap = float(st["extrapolation_at_best"][i])
        records.append({
            "seed": s,
            "success": None if threshold is None else bool(alive and extrap < threshold),
            "solved_at": int(st["solved_at"][i]) if st["solved_at"][i] >= 0 else None,
            "sparsity_error": float(st["sparsity_at_best"][i]),
            "diverged": not alive,
            "diverged_at": int(st["diverged_at"][i]) if st["diverged_at"][i] >= 0 else None,
            "best_step": int(st["best_step"][i]) if st["best_step"][i] >= 0 else None,
            "interpolation_mse": float(st["interpolation_at_best"][i]),
            "extrapolation_mse": extrap,
            "interpolation_mse_init": float(st["interpolation_init"][i]),
            "extrapolation_mse_init": float(st["extrapolation_init"][i]),
        })
    return TrainResult(records, curves, model, time.perf_counter() - t0)
