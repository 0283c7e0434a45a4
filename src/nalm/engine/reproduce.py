"""``nalm reproduce``: every experiment's grid of a profile (quick, acceptance, paper), resumable, on worker processes.

Every configuration is an independent run in the store; ``reproduce`` skips finished ones, resumes interrupted ones
from their last checkpoint, and spreads the rest over ``jobs`` worker processes (one intra-op thread each). Each run
is leased in the store while it trains, so two ``reproduce`` processes on one store share the work and never train
the same configuration twice; a run leased by another live process is put back and tried again when nothing else is
left. Before it starts, ``reproduce`` prints the number of runs and the time it expects them to take (from each
experiment's cost estimate, calibrated on the seconds of the store's finished runs: :mod:`.calibration`); one
progress bar (on a terminal) shows the runs done and the ETA. A dry run prints that plan, configuration by
configuration, and stops there: nothing is trained and the store is neither created nor written.

Executors: ``local`` (the default) is the process pool above; ``ray`` sends every (configuration × block of seeds) to
a Ray cluster as one task, and this process alone writes the store (:mod:`nalm.engine.executors.ray_executor`). ``shard``
(i, n) keeps every n-th configuration of the grid from the i-th: one slice per job of a cluster job array, each with
its own store, combined afterwards with ``nalm merge`` (docs/cluster.md).
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

from nalm.errors import ConfigError, NalmError

from .calibration import calibrate
from .experiment import PROFILES, RunSpec, get_experiment, list_experiments
from .progress import duration, sweep_bar
from .runner import Busy, resolve_device, run, set_threads
from .store import Store, config_key


def specs(profile: str, only: list[str] | None = None) -> list[RunSpec]:
    """The configurations of ``profile``, for the experiments ``only`` (default: all registered)."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose from: {', '.join(PROFILES)}")
    names = list_experiments() if only is None else only
    return [s for n in names for s in get_experiment(n).grid(profile)]


EXECUTORS = ("local", "ray")


def shard_of(specs_: list[RunSpec], shard: tuple[int, int] | None) -> list[RunSpec]:
    """Configurations i, i + n, i + 2n, ... of the grid for ``shard`` = (i, n) (the grid's order is fixed by the
    code, so the n shards of one profile cover it exactly once)."""
    if shard is None:
        return specs_
    i, n = shard
    if not (isinstance(i, int) and isinstance(n, int) and 0 <= i < n):
        raise ConfigError(f"a shard is I/N with 0 <= I < N, got {i}/{n}")
    return specs_[i::n]


def _die_with_parent(parent: int) -> None:
    """Worker initialiser: on Linux, ask the kernel to end this worker when ``reproduce`` itself is killed (even by
    SIGKILL), so that no orphan trains on; what it finished is already in the store, and the next ``reproduce``
    resumes the rest from its checkpoint. The request only covers a parent that dies after it is made: if the parent
    is already gone (it was killed while this worker started), exit now."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        PR_SET_PDEATHSIG = 1
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        os._exit(1)


def _worker(spec: RunSpec, store_path: str, device: str, module: str) -> tuple[str, dict]:
    """Run one configuration in a worker process. ``module`` defines the experiment: importing it registers it
    here too (a plug-in the parent registered at run time, e.g. from a test, is not a built-in)."""
    importlib.import_module(module)
    set_threads(1)
    with Store(store_path) as store:
        try:
            return "done", run(spec, store, wait=False, device=resolve_device(device))
        except Busy as busy:
            return "busy", busy.holder


def _bar(total: float, runs: int, profile: str, enabled: bool):
    bar = sweep_bar(total, f"reproduce {profile}", enabled)
    if bar is not None:
        bar.set_postfix_str(f"0/{runs} runs", refresh=False)
    return bar


def reproduce(profile: str, store_path: str, *, only: list[str] | None = None, jobs: int = 1,
              progress: bool = True, device: str = "cpu", poll: float = 2.0, executor: str = "local",
              shard: tuple[int, int] | None = None, dry_run: bool = False, **ray_options) -> dict | None:
    """Run every configuration of ``profile`` (of ``shard``) not yet finished in the store, with ``executor``;
    with ``dry_run`` only print the plan (:func:`print_plan`): nothing is trained and the store is not touched.

    ``ray_options`` go to :func:`nalm.engine.executors.ray_executor.run_sweep` (address, seed_block, max_in_flight,
    max_retries, checkpoint_every); the Ray executor returns its counts (tasks, finished, failed, seconds, ...)."""
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; choose from: {', '.join(EXECUTORS)}")
    if executor == "local" and any(v is not None for v in ray_options.values()):
        given = ", ".join(k for k, v in ray_options.items() if v is not None)
        raise ConfigError(f"{given}: options of --executor ray, not of the local process pool")
    todo = shard_of(specs(profile, only), shard)
    if dry_run:
        return print_plan(todo, stored_runs(store_path), profile, jobs, executor)
    with Store(store_path) as store:  # create the database (and fail early on a bad path) before starting workers
        runs = store.runs()
    finished = {r["key"] for r in runs}
    todo = [s for s in todo if config_key(s.resolved()) not in finished]
    calibration = calibrate(runs)
    cost = [calibration.cost(s) for s in todo]
    total = sum(cost)
    where = "on a Ray cluster" if executor == "ray" else f"on {jobs} worker process(es)"
    print(f"reproduce --profile {profile}: {len(todo)} configuration{'s' * (len(todo) != 1)} to run, "
          f"{len(finished)} already in the store; "
          f"{duration(total)} of one core {where}" + ("" if executor == "ray" else
                                                     f", estimated {duration(total / max(1, min(jobs, len(todo))))}")
          + f"; {calibration.describe(s.experiment for s in todo)}", file=sys.stderr)
    if executor == "ray":
        return _reproduce_ray(todo, store_path, profile, progress, device, ray_options)
    if not todo:
        return None
    bar = _bar(total, len(todo), profile, progress)
    failed: list[str] = []
    done = 0
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_die_with_parent,
                             initargs=(os.getpid(),)) as pool:
        def submit(i: int):
            return pool.submit(_worker, todo[i], store_path, device, type(todo[i].exp).__module__)

        futures = {submit(i): i for i in range(len(todo))}
        busy: list[int] = []
        while futures or busy:
            if not futures:  # only runs that other processes train are left: look again in a while
                time.sleep(poll)
                futures = {submit(i): i for i in busy}
                busy = []
            finished_now, _ = wait(futures, return_when=FIRST_COMPLETED)
            for f in finished_now:
                i = futures.pop(f)
                spec = todo[i]
                try:
                    status, payload = f.result()
                except NalmError as e:
                    status, payload = "failed", str(e)
                if status == "busy":
                    busy.append(i)
                    continue
                done += 1
                if status == "failed":
                    failed.append(f"{spec.name}: {payload}")
                    line = f"  {spec.name}: FAILED: {payload}"
                else:
                    line = f"  {spec.name}: " + ", ".join(
                        f"{k}={payload[k]:.3g}" if isinstance(payload[k], float) else f"{k}={payload[k]}"
                        for k in ("success_rate", "seconds") if k in payload)
                if bar is not None:
                    bar.write(line)
                    bar.set_postfix_str(f"{done}/{len(todo)} runs", refresh=False)
                    bar.update(round(cost[i], 1))
                else:
                    print(line, file=sys.stderr)
    if bar is not None:
        bar.close()
    if failed:
        raise NalmError(f"{len(failed)} of {len(todo)} runs failed (the others are in the store):\n  "
                        + "\n  ".join(failed))


def stored_runs(store_path) -> list[dict]:
    """The finished runs in the store, read without creating the file (a missing or empty one has none) or
    writing to it."""
    path = Path(store_path)
    if not path.exists() or (path.is_file() and path.stat().st_size == 0):
        return []
    with Store(path, readonly=True) as store:
        return store.runs()


def print_plan(todo: list[RunSpec], runs: list[dict], profile: str, jobs: int, executor: str) -> None:
    """The dry run of ``reproduce``, on stdout: per experiment, the configurations to run (seeds × steps and the
    estimated core-minutes of each, from the experiment's cost estimate calibrated on the store's finished ``runs``)
    and those already in the store; then the totals, with the wall time on ``jobs`` worker processes."""
    finished, calibration = {r["key"] for r in runs}, calibrate(runs)
    groups: dict[str, list] = {}
    for spec in todo:
        key = config_key(spec.resolved())
        groups.setdefault(spec.experiment, []).append((spec, key, key in finished, calibration.cost(spec)))
    total = to_run = stored = 0
    for name, rows in groups.items():
        cost = sum(c for _, _, done, c in rows if not done)
        n_done = sum(done for _, _, done, _ in rows)
        print(f"{name}: {len(rows) - n_done} to run, {n_done} already in the store; {cost / 60:,.1f} core-minutes")
        for spec, key, done, c in rows:
            t = spec.train
            seeds = f"{t.seeds} seeds" + (f" ({t.first_seed}–{t.first_seed + t.seeds - 1})" if t.first_seed else "")
            print(f"  {'stored' if done else 'run   '} {key}  {spec.name}  {seeds} × {t.iterations:,} steps"
                  + ("" if done else f"  {c / 60:,.1f} core-min"))
        total, to_run, stored = total + cost, to_run + len(rows) - n_done, stored + n_done
    wall = ("on a Ray cluster: about this divided by its CPUs" if executor == "ray" else
            f"about {duration(total / max(1, min(jobs, to_run)))} of wall time on {jobs} worker process(es)")
    print(f"reproduce --profile {profile} (dry run, nothing trained or written): {to_run} "
          f"configuration{'s' * (to_run != 1)} to run, {stored} already in the store; {total / 60:,.1f} core-minutes, "
          f"{wall}; {calibration.describe(groups)}")


def _reproduce_ray(todo, store_path, profile, progress, device, options) -> dict:
    from nalm.engine.executors.ray_executor import run_sweep

    options = {k: v for k, v in options.items() if v is not None}
    stats = run_sweep(todo, store_path, device=device, progress=progress, desc=f"reproduce {profile}", **options)
    print(f"reproduce (ray): {stats['tasks']} tasks submitted, {stats['finished']} blocks finished, "
          f"{stats['runs']} configurations finished, {stats['failed']} failed; {stats['seconds']:.1f} s "
          f"(Ray start-up {stats['ray_start_seconds']:.1f} s)", file=sys.stderr)
    if stats["failed"]:
        with Store(store_path) as store:
            failures = store.failures()
        raise NalmError(f"{len(failures)} task(s) failed (recorded in the store's failures table; the rest are in "
                        f"the store, and the same command retries only what is missing):\n  "
                        + "\n  ".join(f"{f['name']} seeds {f['first_seed']}..{f['first_seed'] + f['seeds'] - 1}: "
                                       f"{f['error'].splitlines()[0]}" for f in failures))
    return stats
