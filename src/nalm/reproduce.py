"""``nalm reproduce``: every experiment's grid of a profile (quick, acceptance, paper), resumable, on worker processes.

Every configuration is an independent run in the store; ``reproduce`` skips finished ones, resumes interrupted ones
from their last checkpoint, and spreads the rest over ``jobs`` worker processes (one intra-op thread each). Each run
is leased in the store while it trains, so two ``reproduce`` processes on one store share the work and never train
the same configuration twice; a run leased by another live process is put back and tried again when nothing else is
left. Before it starts, ``reproduce`` prints the number of runs and the time it expects them to take (from each
experiment's cost estimate); one progress bar (on a terminal) shows the runs done and the ETA.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

from .errors import ConfigError, NalmError
from .experiments import PROFILES, Busy, RunSpec, get_experiment, list_experiments, resolve_device, run, set_threads
from .store import Store, config_key


def specs(profile: str, only: list[str] | None = None) -> list[RunSpec]:
    """The configurations of ``profile``, for the experiments ``only`` (default: all registered)."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose from: {', '.join(PROFILES)}")
    names = list_experiments() if only is None else only
    return [s for n in names for s in get_experiment(n).grid(profile)]


def duration(seconds: float) -> str:
    """A duration for people: "45 s", "12 min", "3 h 20 min", "2.5 days"."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
    return f"{seconds / 86400:.1f} days"


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
    if not (enabled and sys.stderr.isatty()):
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=round(total, 1), desc=f"reproduce {profile}", unit="s", dynamic_ncols=True,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix} [{elapsed}<{remaining}]", postfix=f"0/{runs} runs")


def reproduce(profile: str, store_path: str, *, only: list[str] | None = None, jobs: int = 1,
              progress: bool = True, device: str = "cpu", poll: float = 2.0) -> None:
    """Run every configuration of ``profile`` not yet finished in the store."""
    todo = specs(profile, only)
    with Store(store_path) as store:  # create the database (and fail early on a bad path) before starting workers
        finished = {r["key"] for r in store.runs()}
    todo = [s for s in todo if config_key(s.resolved()) not in finished]
    cost = [s.exp.cost(s) for s in todo]
    total = sum(cost)
    print(f"reproduce --profile {profile}: {len(todo)} configurations to run, {len(finished)} already in the store; "
          f"estimated {duration(total / max(1, min(jobs, len(todo))))} on {jobs} worker process(es)",
          file=sys.stderr)
    if not todo:
        return
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
