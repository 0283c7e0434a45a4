"""``nalm reproduce --executor ray``: each (configuration × block of seeds) is one Ray task; only the driver writes.

The driver (this module, in the ``reproduce`` process) plans the blocks every unfinished configuration still needs
(:func:`nalm.engine.executors.seed_blocks`: finished blocks are in the store and never run again), takes the run's lease in
the store (so a local ``reproduce`` on the same store never trains it at the same time), and submits the blocks as
``num_cpus=1`` tasks, longest first, at most ``max_in_flight`` at a time. As each task returns (``ray.wait``) the
driver writes its result in one transaction: a finished block's curve rows and records, or a paused block's
checkpoint (which it then resubmits). When a configuration's last block is in, its summary is computed over the
merged records and the run is finished. A task that raises (or whose worker is lost more than ``max_retries`` times)
is recorded in the store's failures table with its error, and the sweep goes on; the run stays unfinished and the
next ``reproduce`` trains only its missing blocks. Killing the driver loses at most the slices in flight.

Ray is imported only here, when this executor is asked for (``pip install 'nalm[ray]'``).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field

from nalm.engine.experiment import RunSpec
from nalm.engine.progress import duration, sweep_bar
from nalm.engine.store import LEASE_TIMEOUT, Store, config_key
from nalm.errors import ConfigError

from . import block_spec, fields_of, merge_blocks, seed_blocks, train_block

RAY_HINT = "pip install 'nalm[ray]' (or: pip install 'ray>=2.9')"


def import_ray():
    """The ray module, or a ConfigError that says how to install it. Ray's usage statistics are off unless the
    environment says otherwise."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--executor ray needs Ray, an optional dependency of nalm: {RAY_HINT}; "
                          f"or use --executor local") from None
    return ray


def connect(ray, address: str | None) -> bool:
    """Join the cluster at ``address`` ("auto": the one ``ray start`` runs on this machine; or host:port), or start a
    local one with this machine's cores. True when this call started Ray here (the caller shuts it down); a Ray
    already initialised in this process (e.g. by a test) is used as it is."""
    if ray.is_initialized():
        return False
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING)
        else:
            # "local": a new cluster even where `ray start` left its address behind (RAY_ADDRESS, /tmp/ray)
            ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False,
                     logging_level=logging.WARNING)
    except ConnectionError as e:
        raise ConfigError(f"cannot join a Ray cluster at --address {address} ({e}); start one with "
                          f"`ray start --head`, or leave out --address for a local one") from None
    return True


@dataclass
class _Block:
    spec: RunSpec  # the whole configuration
    key: str
    first: int
    seeds: int
    cost: float  # estimated seconds of one core for the whole block
    done_fraction: float = 0.0  # of the block's steps, from its checkpoint
    checkpoint: tuple[int, bytes] | None = None


@dataclass
class _Run:
    spec: RunSpec
    key: str
    left: set = field(default_factory=set)  # first seeds of the blocks not finished in this sweep
    failed: bool = False


class _Bar:
    """One bar for the sweep: estimated core-seconds done, with tasks done / running / failed; on a terminal only."""

    def __init__(self, total: float, tasks: int, enabled: bool, desc: str):
        self.tasks, self.done, self.failed = tasks, 0, 0
        self.bar = sweep_bar(total, desc, enabled)

    def update(self, seconds: float, running: int, line: str | None = None) -> None:
        if self.bar is None:
            if line:
                print(line, file=sys.stderr)
            return
        if line:
            self.bar.write(line)
        self.bar.set_postfix_str(f"{self.done}/{self.tasks} tasks done, {running} running, {self.failed} failed",
                                 refresh=False)
        self.bar.update(round(seconds, 1))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _error_text(e: BaseException) -> str:
    """A task's error for the failures table: the cause's type, message and (for a raising task) its traceback."""
    cause = getattr(e, "cause", None)
    text = str(e)
    if cause is not None and not isinstance(cause, type):
        head = f"{type(cause).__name__}: {cause}"
        return head if head in text else f"{head}\n{text}"
    return f"{type(e).__name__}: {text}"


def run_sweep(todo: list[RunSpec], store_path: str, *, address: str | None = None, seed_block: int | None = None,
              max_in_flight: int | None = None, max_retries: int = 3, checkpoint_every: float = 600.0,
              device: str = "cpu", progress: bool = True, desc: str = "reproduce", poll: float = 5.0) -> dict:
    """Train every configuration of ``todo`` not finished in the store as Ray tasks; returns counts (tasks
    submitted, finished, failed, runs finished, seconds of wall time and of Ray's start-up)."""
    ray = import_ray()
    stats = {"ray_start_seconds": 0.0, "tasks": 0, "finished": 0, "failed": 0, "runs": 0, "busy": 0, "seconds": 0.0}
    if not todo:  # nothing to do: no cluster to start
        return stats
    t0 = time.perf_counter()
    started = connect(ray, address)
    stats["ray_start_seconds"] = round(time.perf_counter() - t0, 2)
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        cap = max_in_flight or 2 * cpus
        gpus = 1 if device.strip().lower().startswith("cuda") else 0
        task = ray.remote(train_block).options(num_cpus=1, num_gpus=gpus, max_retries=max_retries)
        paths = [p for p in sys.path if p and os.path.isdir(p)]
        with Store(store_path) as store:
            sweep = _Sweep(store, task, ray, paths, device, checkpoint_every, stats)
            while todo:
                todo = sweep.plan(todo, seed_block)
                sweep.run(cap, progress, desc, cpus)
                if todo:  # configurations other processes hold: look again in a while
                    time.sleep(poll)
    finally:
        if started:
            ray.shutdown()
    stats["seconds"] = round(time.perf_counter() - t0, 2)
    return stats


class _Sweep:
    def __init__(self, store: Store, task, ray, paths, device, checkpoint_every, stats):
        self.store, self.task, self.ray, self.paths, self.device = store, task, ray, paths, device
        self.checkpoint_every, self.stats = checkpoint_every, stats
        self.runs: dict[str, _Run] = {}
        self.blocks: list[_Block] = []

    def plan(self, todo: list[RunSpec], seed_block: int | None) -> list[RunSpec]:
        """Take the lease of each unfinished configuration and list the blocks it still needs (a configuration whose
        blocks are all in is finished at once); returns the configurations another live process holds."""
        busy, store = [], self.store
        self.blocks, self.runs = [], {}
        finalize = []
        for spec in todo:
            config = spec.resolved()
            key = config_key(config)
            existing = store.run(key)
            if key in self.runs or (existing is not None and existing["status"] == "done"):
                continue  # finished, or listed twice
            if store.acquire(key) is not None:
                busy.append(spec)
                continue
            store.start_run(key, spec.experiment, spec.name, config)
            known = store.blocks(key)
            done = [(b["first_seed"], b["seeds"]) for b in known if b["status"] == "done"]
            partial = {(b["first_seed"], b["seeds"]): b["step"] for b in known if b["status"] == "running"}
            run = self.runs[key] = _Run(spec, key)
            for first, n in seed_blocks(spec.train.first_seed, spec.train.seeds, seed_block, done, partial):
                part = block_spec(spec, first, n)
                block = _Block(spec, key, first, n, spec.exp.cost(part))
                if (first, n) in partial and (ckpt := store.block_checkpoint(key, first)) is not None:
                    block.checkpoint = ckpt
                    block.done_fraction = min(1.0, ckpt[0] / max(1, spec.train.iterations))
                self.blocks.append(block)
                run.left.add(first)
            if not run.left:
                finalize.append(run)
        for run in finalize:  # every block was in the store already (a driver killed just before the summary)
            self._finish_run(run)
        if busy:
            print(f"reproduce: {len(busy)} configuration(s) are being trained by another process; waiting for them",
                  file=sys.stderr)
        self.stats["busy"] += len(busy)
        return busy

    def run(self, cap: int, progress: bool, desc: str, cpus: int) -> None:
        pending = sorted(self.blocks, key=lambda b: -b.cost * (1 - b.done_fraction))
        total = sum(b.cost * (1 - b.done_fraction) for b in pending)
        print(f"reproduce (ray, {cpus} CPUs): {len(self.runs)} configurations in {len(pending)} tasks, estimated "
              f"{duration(total / max(1, min(cpus, len(pending))))}", file=sys.stderr)
        bar = _Bar(total, len(pending), progress, desc)
        inflight: dict = {}
        beat = time.monotonic()
        try:
            while pending or inflight:
                while pending and len(inflight) < cap:
                    block = pending.pop(0)
                    part = block_spec(block.spec, block.first, block.seeds)
                    ref = self.task.remote(fields_of(part), self.device, type(block.spec.exp).__module__, self.paths,
                                           block.checkpoint, self.checkpoint_every)
                    inflight[ref] = block
                    self.stats["tasks"] += 1
                ready, _ = self.ray.wait(list(inflight), num_returns=1, timeout=LEASE_TIMEOUT / 4)
                if time.monotonic() - beat > LEASE_TIMEOUT / 4:  # renew the leases of the runs in progress
                    for key, run in self.runs.items():
                        if run.left:
                            self.store.heartbeat(key)
                    beat = time.monotonic()
                for ref in ready:
                    block = inflight.pop(ref)
                    again = self._handle(ref, block, bar, len(inflight))
                    if again:
                        pending.insert(0, block)
        finally:
            bar.close()
            for key in self.runs:
                self.store.release(key)

    def _handle(self, ref, block: _Block, bar: _Bar, running: int) -> bool:
        """Write one returned task's result; True when the block is to be submitted again (a paused slice)."""
        run, name = self.runs[block.key], block.spec.name
        label = f"{name} seeds {block.first}..{block.first + block.seeds - 1}"
        try:
            out = self.ray.get(ref)
        except Exception as e:  # the task raised, or its worker was lost more often than max_retries
            error = _error_text(e)
            self.store.record_failure(block.key, block.first, block.seeds, name, error)
            run.failed = True
            self.stats["failed"] += 1
            bar.failed += 1
            bar.done += 1
            bar.update(block.cost * (1 - block.done_fraction), running,
                       f"  {label}: FAILED: {error.splitlines()[0] if error else '?'}")
            return False
        if out["status"] == "paused":
            self.store.save_block_checkpoint(block.key, block.first, block.seeds, out["step"], out["checkpoint"],
                                             out["curves"], out["seconds"])
            block.checkpoint = (out["step"], out["checkpoint"])
            fraction = min(1.0, out["step"] / max(1, block.spec.train.iterations))
            bar.update(block.cost * max(0.0, fraction - block.done_fraction), running)
            block.done_fraction = fraction
            return True
        self.store.finish_block(block.key, block.first, block.seeds, out["records"], out["artifacts"], out["curves"],
                                out["seconds"])
        self.stats["finished"] += 1
        run.left.discard(block.first)
        bar.done += 1
        line = self._finish_run(run) if not run.left and not run.failed else None
        bar.update(block.cost * (1 - block.done_fraction), running, line)
        return False

    def _finish_run(self, run: _Run) -> str:
        """Merge a configuration's finished blocks, summarise them and finish the run (one transaction); a summary
        that raises is recorded as the run's failure."""
        spec, store = run.spec, self.store
        try:
            result = merge_blocks(spec, store.block_results(run.key))
            summary = spec.exp.summarize(spec, result)
            summary["seconds"] = round(result.seconds, 2)  # core-seconds of training, summed over the blocks
        except Exception as e:
            store.record_failure(run.key, spec.train.first_seed, spec.train.seeds, spec.name,
                                 f"summarising the merged blocks: {type(e).__name__}: {e}")
            run.failed = True
            self.stats["failed"] += 1
            return f"  {spec.name}: FAILED to summarise: {e}"
        store.finish_run(run.key, result.records, summary, result.seconds, result.artifacts)
        store.release(run.key)
        self.stats["runs"] += 1
        return f"  {spec.name}: " + ", ".join(
            f"{k}={summary[k]:.3g}" if isinstance(summary[k], float) else f"{k}={summary[k]}"
            for k in ("success_rate", "seconds") if k in summary)
