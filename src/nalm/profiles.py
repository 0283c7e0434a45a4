"""The experiment grids of ``nalm reproduce``: quick (≤ 15 minutes on 2 cores), acceptance, paper.

Every configuration is an independent run in the store; ``reproduce`` skips finished ones, resumes interrupted
ones from their last checkpoint, and spreads the rest over ``jobs`` worker processes (one intra-op thread each).
"""

from __future__ import annotations

import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, replace
import multiprocessing

from .errors import ConfigError
from .experiments import RunSpec, run, set_threads
from .store import Store
from .tasks.arithmetic import OPERATIONS
from .tasks.identity import FIGURE1_ACTIVATIONS
from .train import DEFAULT_REGULARIZERS, Regularizer, TrainConfig

#: Table 1's static models: the paper's (MLP ReLU6, linear, NAC, NALU) and the successors (NAC•, NAU, NMU).
STATIC_MODELS = ("relu6", "linear", "nac-nac", "nac-nac_mul", "nalu-nalu", "nau-nau", "nau-nmu")
RECURRENT_MODELS = ("lstm", "rnn-tanh", "rnn-relu", "nac-nac", "nalu-nalu", "nau-nmu")
#: The classic recurrent cells need more than 2 hidden units to fit anything; the arithmetic units do not.
RECURRENT_BASELINE_HIDDEN = 16
GROUPS = ("identity", "arithmetic", "arithmetic-recurrent", "acceptance")


def _regs(**overrides: Regularizer) -> dict:
    return {k: asdict(v) for k, v in {**DEFAULT_REGULARIZERS, **overrides}.items()}


def _grid(profile: str) -> dict[str, list[RunSpec]]:
    if profile == "quick":
        seeds, static_its, rec_its, id_its, id_seeds = 10, 10_000, 3_000, 3_000, 20
        # The paper-scale ramps start after 5·10³ (NAU) and 10⁶ (NMU) steps; compress them into the short run.
        regs = _regs(nau=Regularizer(0.01, 2_000, 6_000), nmu=Regularizer(10.0, 4_000, 8_000))
        rec_regs = _regs(nau=Regularizer(0.01, 1_000, 2_000), nmu=Regularizer(10.0, 1_500, 2_500))
        eval_size, rec_eval_size = 10_000, 1_000
    elif profile == "paper":
        seeds, static_its, rec_its, id_its, id_seeds = 100, 5_000_000, 500_000, 10_000, 100
        regs = rec_regs = _regs()
        eval_size, rec_eval_size = 10_000, 10_000
    elif profile == "acceptance":
        return {"acceptance": acceptance_specs()}
    else:
        raise ConfigError(f"unknown profile {profile!r}; choose from: quick, acceptance, paper")
    train = TrainConfig(iterations=static_its, seeds=seeds, regularizers=regs)
    rec_train = TrainConfig(iterations=rec_its, seeds=seeds, regularizers=rec_regs)
    id_train = TrainConfig(iterations=id_its, seeds=id_seeds, learning_rate=1e-2, regularizers={})
    grid = {
        "identity": [RunSpec("identity", a, {}, id_train) for a in FIGURE1_ACTIVATIONS],
        "arithmetic": [RunSpec("arithmetic", m, {"operation": op, "evaluation_size": eval_size}, train)
                       for op in OPERATIONS for m in STATIC_MODELS],
        "arithmetic-recurrent": [
            RunSpec("arithmetic-recurrent", m, {"operation": op, "evaluation_size": rec_eval_size}, rec_train,
                    hidden_size=RECURRENT_BASELINE_HIDDEN if m in ("lstm", "gru", "rnn-tanh", "rnn-relu") else 2)
            for op in OPERATIONS for m in RECURRENT_MODELS],
    }
    if profile == "paper":
        grid["acceptance"] = acceptance_specs()
    return grid


def acceptance_specs() -> list[RunSpec]:
    """The acceptance runs of the arithmetic benchmark: 100 seeds, 50,000 iterations each."""
    seeds, its = 100, 50_000
    nau = TrainConfig(iterations=its, seeds=seeds)
    # NMU within 5·10⁴ steps: the sparsity ramps must fit inside the run (ours; SPEC §3's start at 10⁶).
    nmu = TrainConfig(iterations=its, seeds=seeds,
                      regularizers=_regs(nau=Regularizer(0.01, 5_000, 20_000), nmu=Regularizer(10.0, 20_000, 35_000)))
    return [
        RunSpec("arithmetic", "nau-nau", {"operation": "add"}, nau),
        RunSpec("arithmetic", "nau-nau", {"operation": "sub"}, nau),
        RunSpec("arithmetic", "nau-nmu", {"operation": "mul", "input_size": 4, "subsets": "0:2,0:4"}, nmu),
        RunSpec("arithmetic", "nau-nmu", {"operation": "mul"}, nmu),
    ]


def specs(profile: str, only: str | None = None) -> list[RunSpec]:
    grid = _grid(profile)
    groups = list(grid) if only is None else [g.strip() for g in only.split(",") if g.strip()]
    unknown = [g for g in groups if g not in grid]
    if unknown:
        raise ConfigError(f"--only: unknown group(s) {', '.join(unknown)} for profile {profile!r}; "
                          f"choose from: {', '.join(grid)}")
    return [s for g in groups for s in grid[g]]


def _die_with_parent() -> None:
    """Worker initialiser: on Linux, ask the kernel to end this worker when ``reproduce`` itself is killed (even by
    SIGKILL), so that no orphan trains on; what it finished is already in the store, and the next ``reproduce``
    resumes the rest from its checkpoint."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        PR_SET_PDEATHSIG = 1
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass


def _worker(spec: RunSpec, store_path: str) -> tuple[str, dict]:
    set_threads(1)
    with Store(store_path) as store:
        return spec.name, run(spec, store)


def reproduce(profile: str, store_path: str, *, only: str | None = None, jobs: int = 1,
              progress: bool = True) -> None:
    """Run every configuration of ``profile`` not yet finished in the store."""
    todo = specs(profile, only)
    with Store(store_path):  # create the database (and fail early on a bad path) before starting workers
        pass
    bar = None
    if progress and sys.stderr.isatty():
        try:
            from tqdm import tqdm
            bar = tqdm(total=len(todo), desc=f"reproduce {profile}", unit="run")
        except ImportError:
            pass
    print(f"reproduce --profile {profile}: {len(todo)} configurations, {jobs} worker process(es)", file=sys.stderr)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_die_with_parent) as pool:
        futures = [pool.submit(_worker, s, store_path) for s in todo]
        for f in as_completed(futures):
            name, summary = f.result()
            line = f"  {name}: " + ", ".join(f"{k}={summary[k]:.3g}" if isinstance(summary[k], float) else
                                            f"{k}={summary[k]}" for k in ("success_rate", "seconds") if k in summary)
            if bar is not None:
                bar.write(line)
                bar.update(1)
            else:
                print(line, file=sys.stderr)
    if bar is not None:
        bar.close()
