"""Sweeps as tasks: a configuration's seeds cut into blocks, each block trained on its own, merged back exactly.

Seeds are independent (each has its own initialisation, data and loss; :mod:`nalm.engine.train`), so a configuration of 100
seeds trained as 4 blocks of 25 gives the same per-seed rows as one block of 100, wherever a seed's numbers do not
depend on the seed count (exact for the NAU, NMU, MLPs and the MNIST nets; NALU's and an LSTM's kernels can round
differently in the last bits at another seed count, and NALU amplifies that). This module holds what the executors share and what runs inside a task; the
Ray driver is :mod:`nalm.engine.executors.ray_executor`.

Rules, chosen here and documented in docs/cluster.md:

- **Blocks.** ``seed_blocks`` cuts the seeds a run still needs into contiguous blocks of at most K; blocks already
  finished (in the store) are never trained again, whatever K is now, and an unfinished block with a checkpoint is
  kept whole so that it resumes.
- **Records** of the blocks are concatenated in seed order; the run's summary is ``exp.summarize`` over them, computed
  when the last block arrives (``TrainResult.model`` is None and ``curves`` empty there: a summary comes from the
  records and artifacts, as every built-in experiment's does).
- **Artifacts** (results that are not per seed, e.g. a curve averaged over the seeds) are merged by the experiment's
  ``merge_artifacts(spec, parts, records)`` when it defines one (``parts``: (block spec, artifacts) in seed order;
  ``records``: the merged per-seed records, for an artifact computed from them); otherwise the run keeps the first
  block's (lowest seeds), which is exact for an artifact that does not depend on the seeds (e.g. a reference
  predictor's error). A run trained as one block (the default) keeps its own.
- **Checkpoints travel through the task's return value.** A task trains for at most ``checkpoint_every`` seconds; at
  the first checkpoint after that it stops and returns the checkpoint; the driver stores it (one transaction with the
  curve rows) and submits the next slice with it. A lost worker costs at most one slice, a killed driver resumes from
  the store, and no worker needs shared storage or write access to the store.
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import os
import sys
import time

import torch

from nalm.engine.experiment import RunSpec
from nalm.engine.train import TrainConfig, TrainResult

__all__ = ["seed_blocks", "block_spec", "merge_blocks", "train_block", "CheckpointSlice"]


def seed_blocks(first: int, count: int, size: int | None, done=(), partial=()) -> list[tuple[int, int]]:
    """The (first_seed, seeds) blocks still to train of seeds ``first .. first + count - 1`` in blocks of at most
    ``size`` (None: one block). ``done`` and ``partial`` are (first_seed, seeds) blocks of the store: seeds of a
    done block are left out; a partial block (one with a checkpoint) lying wholly within the seeds left is kept as it
    is; the other seeds left are cut into contiguous blocks."""
    size = size or count
    free = set(range(first, first + count))
    for f, n in done:
        free -= set(range(f, f + n))
    blocks = []
    for f, n in sorted(partial):
        seeds = set(range(f, f + n))
        if seeds <= free:
            blocks.append((f, n))
            free -= seeds
    start = prev = None
    for s in sorted(free) + [None]:
        if start is not None and (s is None or s != prev + 1 or s - start == size):
            blocks.append((start, prev + 1 - start))
            start = None
        if s is not None:
            start = s if start is None else start
            prev = s
    return sorted(blocks)


def block_spec(spec: RunSpec, first: int, seeds: int) -> RunSpec:
    """``spec`` restricted to seeds ``first .. first + seeds - 1``."""
    return dataclasses.replace(spec, train=dataclasses.replace(spec.train, first_seed=first, seeds=seeds))


def merge_blocks(spec: RunSpec, blocks: list[dict]) -> TrainResult:
    """The TrainResult of ``spec`` from its finished blocks (dicts with first_seed, seeds, records, artifacts,
    seconds): records in seed order, artifacts by the experiment's ``merge_artifacts`` or the first block's,
    seconds summed; no model, no curves (those are in the store)."""
    blocks = sorted(blocks, key=lambda b: b["first_seed"])
    records = [r for b in blocks for r in b["records"]]
    wanted = spec.train.seed_ids
    # A record's model seed is its "seed", or its "model_seed" where an experiment's seed axis carries more than
    # model seeds (single-module: one record per (range, seed)); each wanted seed must be covered as often.
    seeds = [r.get("model_seed", r["seed"]) for r in records]
    if not seeds or sorted(seeds) != sorted(wanted * (len(seeds) // len(wanted))):
        raise ValueError(f"{spec.name}: the blocks cover seeds {seeds}, not {wanted}")
    merge = getattr(spec.exp, "merge_artifacts", None)
    if merge is not None and len(blocks) > 1:
        artifacts = merge(spec, [(block_spec(spec, b["first_seed"], b["seeds"]), b["artifacts"]) for b in blocks],
                          records)
    else:
        artifacts = dict(blocks[0]["artifacts"]) if blocks else {}
    return TrainResult(records, [], None, sum(b["seconds"] for b in blocks), artifacts)


class Paused(BaseException):
    """Raised out of a training loop by :class:`CheckpointSlice` when the task's time slice is over (a
    BaseException, so that an experiment's own ``except Exception`` does not swallow it)."""


class CheckpointSlice:
    """What a task's training loop sees as its store: it hands out the checkpoint the task started from, keeps the
    curve rows and the latest checkpoint it is given, and ends the slice (raises :class:`Paused`) at the first
    checkpoint after ``budget`` seconds that made progress and is not the last step. Only ``load_checkpoint``,
    ``checkpoint_step``, ``save_checkpoint`` and ``heartbeat`` of a :class:`nalm.engine.store.Store` are offered: the
    training loops (nalm.engine.train, nalm.experiments.gridworld) need no more."""

    def __init__(self, checkpoint: tuple[int, bytes] | None, budget: float, iterations: int):
        self.start = checkpoint
        self.budget, self.iterations = budget, iterations
        self.t0 = time.perf_counter()
        self.step = checkpoint[0] if checkpoint else 0
        self.state: bytes | None = None
        self.rows: list[dict] = []

    def load_checkpoint(self, key: str):
        if self.start is None:
            return None
        return self.start[0], torch.load(io.BytesIO(self.start[1]), weights_only=True)

    def checkpoint_step(self, key: str) -> int | None:
        return None if self.start is None else self.start[0]

    def save_checkpoint(self, key: str, step: int, state: dict, curve_rows) -> None:
        self.rows.extend(dict(r) for r in curve_rows)
        started = self.start[0] if self.start else 0
        if step > started and step < self.iterations and self.seconds >= self.budget:
            buf = io.BytesIO()
            torch.save(state, buf)
            self.step, self.state = step, buf.getvalue()
            raise Paused

    def heartbeat(self, key: str) -> None:
        pass

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.t0


def train_block(fields: tuple, device: str, module: str, paths: list[str], checkpoint: tuple[int, bytes] | None,
                budget: float) -> dict:
    """The body of one task: train the block ``fields`` = (experiment, model, task options, TrainConfig fields) for
    at most ``budget`` seconds (then to its next checkpoint), from ``checkpoint`` (step, state) if given.

    ``module`` defines the experiment (imported here, which registers it); ``paths`` are the driver's import paths,
    appended where this process lacks them (as a spawned local worker inherits them). Returns a dict: status "done"
    with records, artifacts, curves (the rows of every checkpoint) and seconds; or "paused" with step, checkpoint
    (bytes), curves and seconds. The task never touches the store."""
    from nalm.engine import resolve_device, set_threads

    for p in paths:
        if p not in sys.path and os.path.isdir(p):
            sys.path.append(p)
    importlib.import_module(module)
    set_threads(1)
    experiment, model, task, train = fields
    spec = RunSpec(experiment, model, dict(task), TrainConfig(**train))
    store = CheckpointSlice(checkpoint, budget, spec.train.iterations)
    try:
        result = spec.exp.train(spec, store=store, key=spec.name, progress=False, device=resolve_device(device))
    except Paused:
        return {"status": "paused", "step": store.step, "checkpoint": store.state, "curves": store.rows,
                "seconds": store.seconds}
    return {"status": "done", "records": result.records, "artifacts": dict(result.artifacts), "curves": store.rows,
            "seconds": result.seconds}


def fields_of(spec: RunSpec) -> tuple:
    """A spec as plain data for a task (the worker rebuilds it once the experiment's module is imported)."""
    return spec.experiment, spec.model, dict(spec.task), dataclasses.asdict(spec.train)
