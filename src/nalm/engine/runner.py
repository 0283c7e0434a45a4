"""One configuration, end to end: take the run's lease, train (or resume), summarise, store.

The resolved configuration of a :class:`RunSpec` (every default filled in) is hashed into the run's key in the
store: running the same spec again returns the stored result, a run that was killed resumes from its last
checkpoint, and a changed option is a new run. While a process trains a run it holds the run's lease in the store
(renewed by a heartbeat), so two processes on one store never train the same configuration at once.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
import time

import torch
from threadpoolctl import threadpool_limits

from nalm.errors import ConfigError

from .experiment import RunSpec
from .store import LEASE_TIMEOUT, Store, config_key, lease_owner


class Busy(Exception):
    """The run is being trained by another live process (its lease row is ``holder``)."""

    def __init__(self, name: str, holder: dict):
        super().__init__(f"{name} is being trained by process {holder['pid']} on {holder['host']}")
        self.holder = holder


class _Heartbeat:
    """Renews this process's lease on a run every LEASE_TIMEOUT / 4 seconds from a thread of its own (with its own
    connection), so that a long stretch between checkpoints never looks like a dead owner."""

    def __init__(self, path, key: str):
        self.path, self.key, self.owner = str(path), key, lease_owner()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        conn = sqlite3.connect(self.path, timeout=60)
        try:
            while not self.stop.wait(LEASE_TIMEOUT / 4):
                with conn:
                    conn.execute("UPDATE leases SET heartbeat = ? WHERE key = ? AND owner = ?",
                                 (time.time(), self.key, self.owner))
        except sqlite3.Error:
            pass  # the run's own checkpoints renew the lease too
        finally:
            conn.close()

    def __enter__(self) -> "_Heartbeat":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def run(spec: RunSpec, store: Store, *, progress: bool = False, device=None, wait: bool = True,
        poll: float = 2.0) -> dict:
    """Run ``spec`` (or fetch it from ``store``); returns its summary.

    When another live process holds the run's lease: with ``wait`` poll until it finishes (and return its result)
    or its lease lapses (and take the run over); without, raise :class:`Busy`.
    """
    exp = spec.exp
    config = spec.resolved()
    key = config_key(config)
    told = False
    while True:
        existing = store.run(key)
        if existing is not None and existing["status"] == "done":
            return existing["summary"]
        holder = store.acquire(key)
        if holder is None:
            break
        if not wait:
            raise Busy(spec.name, holder)
        if not told and progress:
            print(f"nalm: waiting: {spec.name} is being trained by process {holder['pid']} on {holder['host']}",
                  file=sys.stderr)
            told = True
        time.sleep(poll)
    try:
        existing = store.run(key)  # finished by another process between our look and our lease?
        if existing is not None and existing["status"] == "done":
            return existing["summary"]
        with _Heartbeat(store.path, key):
            store.start_run(key, spec.experiment, spec.name, config)
            result = exp.train(spec, store=store, key=key, progress=progress, device=device)
            summary = exp.summarize(spec, result)
            summary["seconds"] = round(result.seconds, 2)  # of this process: a resumed run counts from its checkpoint
            store.finish_run(key, result.records, summary, result.seconds, result.artifacts)
    finally:
        store.release(key)
    return summary


def set_threads(threads: int) -> None:
    """Threads of this process: torch's intra-op threads, and those of numpy's BLAS and of every OpenMP pool loaded
    (threadpoolctl), which otherwise follow OMP_NUM_THREADS or the core count. Every process nalm trains in calls
    it, so that the numpy fast paths round the same way however nalm is launched: OpenBLAS splits a large product
    over its threads and then adds in another order (tests/test_ray.py). One is the default: for models this small,
    two threads were several times slower than one (README, Performance); use processes, not threads, to fill the
    cores."""
    torch.set_num_threads(threads)
    threadpool_limits(limits=threads)  # not as a context: the limit stays for the life of the process


def resolve_device(name: str | None) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when present, else the CPU) as a torch.device; a device that is
    not there is a ConfigError."""
    name = (name or "cpu").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ConfigError(f"unsupported device {name!r}; use cpu, cuda, cuda:N or auto")
    if not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but this machine has no CUDA device that torch can use "
                          f"(torch {torch.__version__}); use --device cpu or auto")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r} asked for, but there are only {torch.cuda.device_count()} CUDA devices")
    return device
