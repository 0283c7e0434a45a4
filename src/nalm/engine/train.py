"""The seed-batched trainer: data -> model -> loss -> step -> evaluate, for S seeds as one tensor program.

Every seed is an independent model: its own initialisation stream, its own training batches (drawn afresh each
step, or its own shuffled order of a fixed data set), its own loss. The losses are summed for one backward pass (the
gradient of a sum hands each seed exactly its own gradient), gradient clipping is computed per seed, and the
optimisers are elementwise, so seed i trains exactly as it would alone. A seed whose loss or a watched evaluation
metric turns NaN or infinite is marked diverged and masked out; the others go on.

The trainer knows nothing of any experiment: a :class:`nalm.engine.task.Task` supplies the batches, the per-seed
loss, the evaluation metrics (several named splits, each with its own metrics), the metric that selects the best
step and, optionally, a success criterion.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from nalm.errors import ConfigError

from .metrics import per_seed_mse
from .progress import ProgressBar, check_tensorboard, tensorboard_writers
from .task import Task, seed_generators, torch_generators


@dataclass(frozen=True)
class Regularizer:
    """λ(t) = scale · clamp((t − start) / (end − start), 0, 1): the linear ramp of Madsen & Johansen (2020).

    With ``initial``: steps of × 10 instead, from λ = initial at ``start`` up to λ = scale at ``end`` in equal
    intervals (0 before ``start``): the L1 schedule the NPUs' authors train with (Heim et al. 2020; the Primer: β
    10⁻⁷ → 10⁻⁵, × 10 every 10,000 steps, is ``Regularizer(1e-5, 0, 20_000, initial=1e-7)``)."""

    scale: float
    start: int
    end: int
    initial: float | None = None

    def __post_init__(self) -> None:
        if self.scale < 0 or self.start < 0 or self.end < self.start:
            raise ConfigError(f"regulariser needs scale >= 0 and 0 <= start <= end, got {self}")
        if self.initial is not None and not 0 < self.initial <= self.scale:
            raise ConfigError(f"a stepped regulariser needs 0 < initial <= scale, got {self}")

    def __call__(self, step: int) -> float:
        if step < self.start:
            return 0.0
        if self.initial is not None:
            levels = round(math.log10(self.scale / self.initial))
            if step >= self.end or levels == 0:
                return self.scale
            return self.initial * 10 ** min(levels, (step - self.start) * levels // (self.end - self.start))
        if step >= self.end:
            return self.scale
        return self.scale * (step - self.start) / (self.end - self.start)

    def stored(self) -> dict:
        """The fields as stored in a TrainConfig (``initial`` only when set, so older keys stay the same)."""
        return {k: v for k, v in asdict(self).items() if k != "initial" or v is not None}

    @classmethod
    def parse(cls, text: str) -> tuple[str, "Regularizer"]:
        """Parse ``unit=scale:start:end`` (e.g. ``nmu=10:10000:20000``), or ``unit=scale:start:end:initial`` for
        steps of × 10 (e.g. ``npu=1e-5:0:20000:1e-7``)."""
        try:
            unit, rest = text.split("=")
            scale, start, end, *initial = rest.split(":")
            if len(initial) > 1:
                raise ValueError
            return unit, cls(float(scale), int(float(start)), int(float(end)),
                             float(initial[0]) if initial else None)
        except ValueError:
            raise ConfigError(f"cannot parse regulariser {text!r}: expected unit=scale:start:end (a linear ramp) or "
                              f"unit=scale:start:end:initial (steps of × 10), e.g. nmu=10:10000:20000") from None


#: SPEC §3: NAU λ̂ = 0.01 from 5·10³ to 5·10⁴; NMU λ̂ = 10 from 10⁶ to 2·10⁶; other units none.
DEFAULT_REGULARIZERS = {"nau": Regularizer(0.01, 5_000, 50_000), "nmu": Regularizer(10.0, 1_000_000, 2_000_000)}


OPTIMIZERS = ("adam", "rmsprop", "sgd")


@dataclass(frozen=True)
class TrainConfig:
    """How to train; all fields but the ``RUNTIME`` ones are stored with the results."""

    iterations: int = 50_000
    batch_size: int = 128
    learning_rate: float = 1e-3
    eval_every: int = 1000
    seeds: int = 10
    first_seed: int = 0
    #: Unit name -> (scale, start, end); units not listed get no regulariser.
    regularizers: dict = field(default_factory=lambda: {k: v.stored() for k, v in DEFAULT_REGULARIZERS.items()})
    #: "adam", "rmsprop" or "sgd" (all in their multi-tensor form).
    optimizer: str = "adam"
    #: Clip each seed's gradient to this global norm (computed per seed, never across seeds); None: no clipping.
    grad_clip: float | None = None
    #: Clip every gradient element to [−v, v] (the iNALU authors' 0.1); None: no clipping.
    grad_clip_value: float | None = None
    #: From this fraction of the iterations on, every learning rate follows a cosine down to 1/1000 of itself at the
    #: last step (``lr_scale``); None: constant learning rates.
    lr_decay: float | None = None
    #: Also log to TensorBoard in this folder (``DIR/seed<s>``, one TensorBoard run per seed): every evaluation
    #: metric and the training loss, at each evaluation. Needs the tensorboard package.
    tensorboard: str | None = None

    #: Fields left out of a stored configuration while at their default (None), so that runs stored before the field
    #: existed keep their keys.
    OPTIONAL: ClassVar[tuple[str, ...]] = ("lr_decay", "grad_clip_value")
    #: Fields never stored: they change where a run reports, not what it computes.
    RUNTIME: ClassVar[tuple[str, ...]] = ("tensorboard",)

    def __post_init__(self) -> None:
        for name in ("iterations", "batch_size", "eval_every", "seeds"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if not isinstance(self.first_seed, int) or self.first_seed < 0:
            raise ConfigError(f"first_seed must be a non-negative integer, got {self.first_seed!r}")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be positive, got {self.learning_rate!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; choose from: {', '.join(OPTIMIZERS)}")
        if self.grad_clip is not None and not (isinstance(self.grad_clip, (int, float))
                                               and 0 < self.grad_clip < math.inf):
            raise ConfigError(f"grad_clip must be a positive number or None, got {self.grad_clip!r}")
        if self.grad_clip_value is not None and not (isinstance(self.grad_clip_value, (int, float))
                                                     and 0 < self.grad_clip_value < math.inf):
            raise ConfigError(f"grad_clip_value must be a positive number or None, got {self.grad_clip_value!r}")
        if self.lr_decay is not None and not (isinstance(self.lr_decay, (int, float)) and 0 <= self.lr_decay < 1):
            raise ConfigError(f"lr_decay must be a fraction in [0, 1) or None, got {self.lr_decay!r}")
        for unit, r in self.regularizers.items():
            Regularizer(**r)
        if self.tensorboard:
            check_tensorboard()

    @property
    def seed_ids(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    def stored(self) -> dict:
        """The configuration as stored with the results (``OPTIONAL`` fields left out while None, ``RUNTIME`` ones
        always)."""
        return {k: v for k, v in asdict(self).items()
                if not (k in self.OPTIONAL and v is None) and k not in self.RUNTIME}

    def lr_scale(self, step: int) -> float:
        """The factor on every learning rate at ``step`` (1 until ``lr_decay`` · iterations, then a cosine from 1 to
        0.001 at the last step)."""
        start = self.iterations * (self.lr_decay if self.lr_decay is not None else 1.0)
        if step <= start:
            return 1.0
        r = min(1.0, (step - start) / (self.iterations - start))
        return 0.001 + 0.999 * 0.5 * (1.0 + math.cos(math.pi * r))


@dataclass
class TrainResult:
    records: list[dict]
    curves: list[dict]
    model: nn.Module
    seconds: float
    #: Results that are not per seed (e.g. a figure's curve), stored as JSON.
    artifacts: dict = field(default_factory=dict)


def make_optimizer(model: nn.Module, learning_rate: float, name: str = "adam") -> torch.optim.Optimizer:
    """Adam, RMSprop or SGD, multi-tensor (``foreach``): one kernel per operation over all parameters.

    Not the fused CPU kernels: fused Adam rounds a stacked (S, ...) parameter differently from the same values held
    as S separate parameters, so seed i of a batched run would drift from the same seed trained alone (NALU amplifies
    it past 1e-6 within a hundred steps); the multi-tensor forms keep them equal. A model may group its parameters
    (e.g. a higher learning rate for an arithmetic cell than for a conv net) with ``parameter_groups(lr)``.
    """
    params = model.parameter_groups(learning_rate) if hasattr(model, "parameter_groups") else model.parameters()
    if name == "adam":
        return torch.optim.Adam(params, lr=learning_rate, foreach=True)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=learning_rate, foreach=True)
    if name == "sgd":
        return torch.optim.SGD(params, lr=learning_rate, foreach=True)
    raise ConfigError(f"unknown optimizer {name!r}; choose from: {', '.join(OPTIMIZERS)}")


def clip_grad_norm_per_seed(parameters, max_norm: float, num_seeds: int) -> Tensor:
    """Scale each seed's gradient so that its global norm (over all of that seed's parameters) is <= max_norm.

    Every parameter must carry the seed axis first, (S, ...). A norm taken over all seeds together would couple
    them: one seed's large gradient would shrink every other seed's step. Returns the per-seed norms before
    clipping, (S,).
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    for g in grads:
        if g.dim() == 0 or g.shape[0] != num_seeds:
            raise ConfigError(f"per-seed gradient clipping needs the seed axis ({num_seeds}) first on every "
                              f"parameter; got a gradient of shape {tuple(g.shape)}")
    if not grads:
        return torch.zeros(num_seeds)
    norms = torch.stack([g.detach().reshape(num_seeds, -1).pow(2).sum(1) for g in grads]).sum(0).sqrt()
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.view((num_seeds,) + (1,) * (g.dim() - 1)).to(g.dtype))
    return norms


@dataclass
class Hooks:
    """The training hooks a model's modules offer: regularisers with their schedules, post-step constraints, and
    observers of each step's per-seed task loss (``observe_loss(loss)``, e.g. the iNALU's re-initialisation aid)."""

    regularized: list
    constrained: list
    observers: list = field(default_factory=list)

    @classmethod
    def of(cls, model: nn.Module, regularizers: dict) -> "Hooks":
        regularized = [(m, Regularizer(**regularizers[m.unit_name])) for m in model.modules()
                       if hasattr(m, "regularization_loss") and getattr(m, "unit_name", None) in regularizers]
        return cls(regularized, [m for m in model.modules() if hasattr(m, "post_step")],
                   [m for m in model.modules() if hasattr(m, "observe_loss")])


def training_step(model: nn.Module, optimizer: torch.optim.Optimizer, x, y, step: int, hooks: Hooks,
                  alive: Tensor, loss_fn=per_seed_mse, grad_clip: float | None = None,
                  grad_clip_value: float | None = None) -> Tensor:
    """One step for all seeds: per-seed loss (task loss + λ(step)·R), one backward of their sum, per-seed gradient
    clipping (by norm, or elementwise to [−v, v]), the optimiser, constraints, loss observers.

    Seeds whose loss is not finite are cleared from ``alive`` (in place) and contribute nothing from then on.
    Returns the per-seed losses (S,).
    """
    task_loss = loss_fn(model(x), y)
    loss = task_loss
    for module, schedule in hooks.regularized:
        lam = schedule(step)
        if lam:
            loss = loss + lam * module.regularization_loss()
    alive &= torch.isfinite(loss).to(alive.device)
    optimizer.zero_grad(set_to_none=True)
    torch.where(alive, loss, torch.zeros_like(loss)).sum().backward()
    if grad_clip is not None:
        clip_grad_norm_per_seed(model.parameters(), grad_clip, alive.shape[0])
    if grad_clip_value is not None:  # elementwise, so per seed by construction
        torch.nn.utils.clip_grad_value_(model.parameters(), grad_clip_value)
    optimizer.step()
    for module in hooks.constrained:
        module.post_step()
    for module in hooks.observers:
        module.observe_loss(task_loss.detach())
    return loss.detach()


def _plain(state):
    """A bit generator's state with its numpy arrays as lists, so that a weights-only checkpoint can hold it."""
    if isinstance(state, dict):
        return {k: _plain(v) for k, v in state.items()}
    return state.tolist() if isinstance(state, np.ndarray) else state


def _to(batch, device):
    """Move a tensor (or a tuple/list of tensors) to ``device``."""
    if device is None:
        return batch
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to(b, device) for b in batch)
    return batch.to(device) if isinstance(batch, Tensor) else batch


class _Bookkeeping:
    """Per-seed state of a run, all (S,) tensors: best step by the task's selection metric, every metric at the best
    step and at initialisation, divergence, and the first step the success criterion held."""

    def __init__(self, S: int):
        self.best = torch.full((S,), math.inf, dtype=torch.float64)
        self.best_step = torch.full((S,), -1, dtype=torch.long)
        self.solved_at = torch.full((S,), -1, dtype=torch.long)
        self.alive = torch.ones(S, dtype=torch.bool)
        self.diverged_at = torch.full((S,), -1, dtype=torch.long)
        self.at_best: dict[str, Tensor] = {}
        self.init: dict[str, Tensor] = {}

    def state(self) -> dict:
        return dict(vars(self))

    def load(self, state: dict) -> None:
        vars(self).update(state)

    def update(self, step: int, metrics: dict[str, Tensor], task) -> None:
        for name in task.finite_metrics:
            self.alive &= torch.isfinite(metrics[name])
        self.diverged_at[~self.alive & (self.diverged_at < 0)] = step  # first evaluation that sees it dead
        if step == 0:
            self.init = {k: v.clone() for k, v in metrics.items()}
        nan = torch.full_like(self.best, math.nan)
        selected = metrics[task.selection_metric]
        better = self.alive & (selected < self.best)
        self.best = torch.where(better, selected, self.best)
        self.best_step[better] = step
        for name, value in metrics.items():
            self.at_best[name] = torch.where(better, value, self.at_best.get(name, nan))
        if task.success_metric is not None and task.threshold is not None:
            solved = self.alive & (metrics[task.success_metric] < task.threshold) & (self.solved_at < 0)
            self.solved_at[solved] = step

    def records(self, seeds: Sequence[int], task) -> list[dict]:
        """One dict per seed: the engine's columns, then every metric at the best step and ``<metric>_init``."""
        out = []
        criterion = task.success_metric is not None and task.threshold is not None
        for i, s in enumerate(seeds):
            alive = bool(self.alive[i])
            record = {
                "seed": s,
                "success": bool(alive and float(self.at_best[task.success_metric][i]) < task.threshold)
                if criterion else None,
                "solved_at": int(self.solved_at[i]) if self.solved_at[i] >= 0 else None,
                "diverged": not alive,
                "diverged_at": int(self.diverged_at[i]) if self.diverged_at[i] >= 0 else None,
                "best_step": int(self.best_step[i]) if self.best_step[i] >= 0 else None,
            }
            record.update({k: float(v[i]) for k, v in self.at_best.items()})
            record.update({f"{k}_init": float(v[i]) for k, v in self.init.items()})
            out.append(record)
        return out


def train(model: nn.Module, task: Task, config: TrainConfig, *, store=None, key: str | None = None,
          progress: bool = False, desc: str = "", device=None, seeds: Sequence[int] | None = None) -> TrainResult:
    """Train ``model`` (S stacked seeds) on ``task``; checkpoint into ``store`` under ``key`` after every evaluation.

    When ``store`` already holds a checkpoint for ``key`` the run resumes from it and ends with the same numbers
    as an uninterrupted run. ``device`` (default the CPU) holds the model and each batch. ``seeds`` (default
    ``config.seed_ids``) are the ids of the seed axis' streams, one per slot: an experiment whose slots are more than
    model seeds (e.g. (range, seed) pairs) gives each slot its own id; the records' ``seed`` is that id.
    """
    t0 = time.perf_counter()
    seeds = list(config.seed_ids if seeds is None else seeds)
    S = len(seeds)
    model.reset_parameters(torch_generators(seeds, "init"))
    if device is not None:
        model.to(device)
    optimizer = make_optimizer(model, config.learning_rate, config.optimizer)
    base_rates = [g["lr"] for g in optimizer.param_groups]
    bitgens = [g.bit_generator for g in seed_generators(seeds, "data")]
    hooks = Hooks.of(model, config.regularizers)
    book = _Bookkeeping(S)
    step = 0
    if store is not None and key is not None and (ckpt := store.load_checkpoint(key)) is not None:
        step, saved = ckpt
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        for g, s in zip(bitgens, saved["rng"]):
            g.state = s
        book.load(saved["bookkeeping"])

    curves: list[dict] = []
    unsaved: list[dict] = []
    writers = tensorboard_writers(config.tensorboard, seeds) if config.tensorboard else []

    def evaluate_now(step: int, loss: Tensor | None = None) -> None:
        model.eval()
        metrics = {k: v.to(torch.float64).cpu() for k, v in task.evaluate(model, S, device=device).items()}
        model.train()
        book.update(step, metrics, task)
        names = list(metrics)
        rows = [{"seed": s, "step": step, **{n: float(metrics[n][i]) for n in names}} for i, s in enumerate(seeds)]
        curves.extend(rows)
        unsaved.extend(rows)
        losses = loss.tolist() if loss is not None and writers else None  # (S,) floats of the last step
        for i, w in enumerate(writers):  # seed i's own TensorBoard run; NaN (no such value, or diverged) left out
            values = {f"evaluation/{n}": rows[i][n] for n in names}
            if losses is not None:
                values["train/loss"] = losses[i]
            for tag, value in values.items():
                if math.isfinite(value):
                    w.add_scalar(tag, value, step)
            w.flush()

    def checkpoint(step: int) -> None:
        if store is None or key is None:
            return
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "rng": [_plain(g.state) for g in bitgens], "bookkeeping": book.state()}
        store.save_checkpoint(key, step, state, unsaved)
        unsaved.clear()

    try:
        if step == 0:
            evaluate_now(0)
            checkpoint(0)
        bar = ProgressBar(config.iterations, step, desc, progress)
        buffer = None
        alive = book.alive.to(device) if device is not None else book.alive
        while step < config.iterations:
            step += 1
            x, y, buffer = task.batch(step, bitgens, config.batch_size, buffer)
            if config.lr_decay is not None:
                for group, rate in zip(optimizer.param_groups, base_rates):
                    group["lr"] = rate * config.lr_scale(step)
            loss = training_step(model, optimizer, _to(x, device), _to(y, device), step, hooks, alive, task.loss,
                                 config.grad_clip, config.grad_clip_value)
            if step % config.eval_every == 0 or step == config.iterations:
                book.alive &= alive.cpu()
                evaluate_now(step, loss)
                alive &= book.alive.to(alive.device)
                checkpoint(step)
                bar.update(config.eval_every if step % config.eval_every == 0 else step % config.eval_every)
        bar.close()
    finally:
        for w in writers:
            w.close()
    return TrainResult(book.records(seeds, task), curves, model, time.perf_counter() - t0)
