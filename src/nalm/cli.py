"""The ``nalm`` command line. ``nalm --help`` and ``nalm COMMAND --help`` explain every option.

``nalm run``, ``nalm sample``, ``nalm reproduce --only``, ``nalm report --only`` and ``nalm export --experiment`` are
generated from the experiment registry (:mod:`nalm.engine.experiment`): each experiment's config dataclass gives the task
options (a field's ``metadata`` may add ``help``, ``choices`` and extra ``flags``), its ``train_defaults`` the
training defaults. No experiment is named here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys

from .errors import ConfigError, NalmError

DEFAULT_STORE = os.path.join("results", "nalm.sqlite")


def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N (e.g. 3/10), got {text!r}") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"a shard I/N needs 0 <= I < N, got {text!r}")
    return i, n


def _default(f: dataclasses.Field):
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]


def _add_task_options(p: argparse.ArgumentParser, config_cls) -> None:
    """One option per field of an experiment's config dataclass (dest ``task__<field>``, unset unless given)."""
    g = p.add_argument_group("task options")
    for f in dataclasses.fields(config_cls):
        default = _default(f)
        flags = [f"--{f.name.replace('_', '-')}", *f.metadata.get("flags", ())]
        text = f"{f.metadata.get('help', f.name.replace('_', ' '))} (default {default})"
        kwargs: dict = {"dest": f"task__{f.name}", "default": None, "help": text, "metavar": f.name.upper()}
        if isinstance(default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
            del kwargs["metavar"]
        elif isinstance(default, tuple):
            kwargs.update(type=_int_tuple, metavar="N,N,...")
        else:
            kwargs["type"] = type(default) if isinstance(default, (int, float)) else str
            if f.metadata.get("choices"):
                kwargs["choices"] = list(f.metadata["choices"])
                del kwargs["metavar"]
        g.add_argument(*flags, **kwargs)


def _task_options(args) -> dict:
    return {k[len("task__"):]: v for k, v in vars(args).items() if k.startswith("task__") and v is not None}


def _add_common(p: argparse.ArgumentParser, *, store: bool = True, device: bool = False) -> None:
    if store:
        p.add_argument("--store", default=DEFAULT_STORE, help=f"results database (default: {DEFAULT_STORE})")
    if device:
        p.add_argument("--device", default="cpu",
                       help="cpu (default), cuda, cuda:N, or auto (CUDA when present); a model on CUDA uses torch "
                            "throughout (the numpy fast paths are CPU-only)")


def _add_train(p: argparse.ArgumentParser, exp) -> None:
    from .engine.train import TrainConfig

    d = {f.name: _default(f) for f in dataclasses.fields(TrainConfig)}
    d.update(exp.train_defaults)
    g = p.add_argument_group("training")
    g.add_argument("--seeds", type=int, default=d["seeds"], help=f"number of seeds, trained together (default {d['seeds']})")
    g.add_argument("--first-seed", type=int, default=d["first_seed"], help="seeds are FIRST..FIRST+SEEDS-1 (default 0)")
    g.add_argument("--iterations", type=int, default=d["iterations"], help=f"training steps (default {d['iterations']})")
    g.add_argument("--batch-size", type=int, default=d["batch_size"], help=f"rows per seed per step (default {d['batch_size']})")
    g.add_argument("--learning-rate", type=float, default=d["learning_rate"],
                   help=f"learning rate (default {d['learning_rate']})")
    g.add_argument("--optimizer", choices=["adam", "rmsprop", "sgd"], default=d["optimizer"],
                   help=f"optimiser (default {d['optimizer']})")
    g.add_argument("--grad-clip", type=float, default=d["grad_clip"],
                   help="clip each seed's gradient norm to this value, per seed (default: no clipping)")
    g.add_argument("--lr-decay", type=float, default=d["lr_decay"], metavar="FRACTION",
                   help="from this fraction of the iterations on, decay every learning rate along a cosine to 1/1000 "
                        f"of itself at the last step (default: {d['lr_decay'] or 'constant rates'})")
    g.add_argument("--eval-every", type=int, default=d["eval_every"], help=f"steps between evaluations (default {d['eval_every']})")
    regs = ", ".join(f"{u}={r['scale']:g}:{r['start']}:{r['end']}" for u, r in d["regularizers"].items()) or "none"
    g.add_argument("--regularizer", action="append", default=[], metavar="UNIT=SCALE:START:END",
                   help=f"sparsity regulariser ramp of a unit, repeatable; UNIT=SCALE:START:END:INITIAL for steps of "
                        f"× 10 from INITIAL to SCALE (the NPUs' L1, e.g. npu=1e-5:0:20000:1e-7) (defaults: {regs})")
    g.add_argument("--no-regularizer", action="store_true", help="switch every regulariser off")
    g.add_argument("--tensorboard", metavar="DIR", help="also log every evaluation to TensorBoard in DIR, one run "
                   "per seed (DIR/seed<s>; not part of the stored configuration; needs: pip install tensorboard)")
    p.set_defaults(regularizer_defaults=d["regularizers"])


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .engine import PROFILES, get_experiment, list_experiments

    names = list_experiments()
    parser = argparse.ArgumentParser(prog="nalm", description="Neural arithmetic logic modules: train, benchmark "
                                     "and report. Experiments: " + ", ".join(names) + ".")
    parser.add_argument("--version", action="version", version=f"nalm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="train one configuration over many seeds and print its statistics")
    run_sub = run.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")
    sample = sub.add_parser("sample", help="print examples of an experiment's data as the model receives them")
    sample_sub = sample.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")
    for name in names:
        exp = get_experiment(name)
        models = f"; the paper's rows: {', '.join(exp.models)}" if exp.models else ""
        p = run_sub.add_parser(name, help=exp.help, description=exp.description or exp.help)
        p.add_argument(*exp.model_flags, dest="model", default=exp.default_model,
                       help=f"{exp.model_help or 'model'} (default {exp.default_model}{models})")
        _add_task_options(p, exp.Config)
        _add_train(p, exp)
        _add_common(p, device=True)
        p.add_argument("--threads", type=int, default=1,
                       help="threads of this process, torch's and numpy's BLAS (default 1: faster for models this "
                            "small; use --jobs in reproduce to fill more cores)")
        p.add_argument("--json", action="store_true", help="print the result as one JSON object")
        p.add_argument("--no-progress", action="store_true", help="no progress bar (there is none off a terminal)")

        s = sample_sub.add_parser(name, help=exp.help, description=f"Examples of {name}'s data: " + (exp.description
                                                                                                   or exp.help))
        _add_task_options(s, exp.Config)
        s.add_argument("--split", choices=list(exp.splits), default=exp.splits[0],
                       help=f"which data (default {exp.splits[0]})")
        s.add_argument("--count", type=int, default=5, help="how many examples (default 5)")
        s.add_argument("--seed", type=int, default=0, help="the model seed whose data stream to show (default 0)")
        s.add_argument("--json", action="store_true", help="one JSON object per line")
        if exp.png:
            s.add_argument("--png", metavar="FILE", help="also draw the examples into this PNG file")

    rep = sub.add_parser("reproduce", help="run the experiment grid of a profile (resumable)")
    rep.add_argument("--profile", choices=list(PROFILES), default="quick",
                     help="quick: every experiment's qualitative result (about 45 minutes on 2 cores); acceptance: "
                          "the checks of the README (hours); paper: the paper's scale (days); the expected time is "
                          "printed before it starts")
    rep.add_argument("--only", metavar="EXPERIMENTS", help="comma-separated subset of: " + ", ".join(names))
    rep.add_argument("--jobs", type=int, default=None,
                     help="local executor: worker processes, one configuration each (default: the number of cores)")
    rep.add_argument("--executor", choices=["local", "ray"], default="local",
                     help="local (default): worker processes on this machine; ray: every configuration × block of "
                          "seeds is a Ray task, and this process alone writes the store (pip install 'nalm[ray]'; "
                          "docs/cluster.md)")
    rep.add_argument("--shard", metavar="I/N", type=_shard,
                     help="only configurations I, I+N, I+2N, ... of the grid (0 <= I < N): one job of a job array, "
                          "each with its own --store, combined with `nalm merge`")
    rep.add_argument("--dry-run", action="store_true",
                     help="print the configurations that would run, those already in the store, and the estimated "
                          "core-minutes and wall time; train nothing and leave the store untouched")
    ray = rep.add_argument_group("ray executor")
    ray.add_argument("--address", help="join this Ray cluster: auto (the one `ray start` runs here) or HOST:PORT "
                                       "(default: start a local cluster with this machine's cores)")
    ray.add_argument("--seed-block", type=int, metavar="K",
                     help="seeds per task: a configuration of S seeds is ceil(S/K) tasks whose results merge into "
                          "the same per-seed rows (default: one task per configuration)")
    ray.add_argument("--max-in-flight", type=int, metavar="N",
                     help="tasks submitted and not yet returned, at most (default: twice the cluster's CPUs)")
    ray.add_argument("--max-retries", type=int, metavar="N",
                     help="resubmissions of a task whose worker or node was lost (default 3); a task that raises "
                          "is recorded as failed, not retried")
    ray.add_argument("--checkpoint-every", type=float, metavar="SECONDS",
                     help="a task returns its checkpoint to this process after this many seconds and goes on as a "
                          "new task, so a lost worker or a killed driver costs at most this much (default 600)")
    _add_common(rep, device=True)
    rep.add_argument("--no-progress", action="store_true", help="no progress bar")

    mg = sub.add_parser("merge", help="combine result stores into one, without duplicating runs",
                        description="Copy every finished run of each STORE into OUT (created when missing). A run "
                                    "is its configuration, so a run in several stores is kept once; unfinished runs "
                                    "are not copied. Use it to gather the stores of a job array (docs/cluster.md).")
    mg.add_argument("out", metavar="OUT", help="the store to write (created when missing)")
    mg.add_argument("stores", metavar="STORE", nargs="+", help="stores to read (left untouched)")

    rp = sub.add_parser("report", help="write the Markdown report and figures from the store")
    _add_common(rp)
    rp.add_argument("--out", default=os.path.join("results", "report.md"),
                    help="report path, or a folder to write report.md in (default results/report.md); the figures "
                    "go beside it")
    rp.add_argument("--profile", dest="profile_label", metavar="PROFILE",
                    help="say at the top which profile the results come from (e.g. acceptance); the top always names "
                         "the date, the nalm version and, in a git checkout, the commit")
    rp.add_argument("--only", metavar="EXPERIMENTS", help="comma-separated subset of: " + ", ".join(names))

    ex = sub.add_parser("export", help="write every finished run × seed as CSV or JSON")
    ex.add_argument("path", help="output file; the format follows its suffix (.csv or .json)")
    _add_common(ex)
    ex.add_argument("--experiment", action="append", choices=names, help="only this experiment (repeatable)")

    sub.add_parser("units", help="list the registered units and their options")

    bench = sub.add_parser("bench", help="benchmarks (never part of the tests)")
    bench_sub = bench.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    bt = bench_sub.add_parser("throughput", help="seed-iterations per second: reference loop vs seed-batched")
    bt.add_argument("--units", default="nau-nmu,nalu-nalu,relu6", help="models (default nau-nmu,nalu-nalu,relu6)")
    bt.add_argument("--seeds", default="1,10,100,1000", help="seed counts of the batched trainer (default 1,10,100,1000)")
    bt.add_argument("--steps", type=int, default=2000, help="training steps per measurement (default 2000)")
    bt.add_argument("--threads", type=int, default=1, help="threads, torch's and numpy's BLAS (default 1)")
    bt.add_argument("--repeat", type=int, default=1,
                    help="measure each row this many times, each in a fresh process, and keep the fastest "
                         "(default 1; use 3 or more on a machine shared with other work)")
    _add_common(bt, store=False, device=True)
    bt.add_argument("--json", action="store_true", help="print a JSON list")
    bs = bench_sub.add_parser("single-module", help="seed-iterations per second of the single-module benchmark: "
                              "nine ranges as one seed axis, one range at a time, a one-model loop")
    bs.add_argument("--units", default="nau,nmu,nalu,realnpu", help="units (default nau,nmu,nalu,realnpu)")
    bs.add_argument("--seeds", type=int, default=25, help="seeds per range (default 25: S = 225)")
    bs.add_argument("--steps", type=int, default=1000, help="training steps per measurement (default 1000)")
    bs.add_argument("--op", default="mul", choices=("add", "sub", "mul", "div"), help="operation (default mul)")
    bs.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    bs.add_argument("--json", action="store_true", help="print a JSON list")
    bm = bench_sub.add_parser("mnist", help="images per CPU-second of the MNIST sequence experiments (Table 2): "
                              "the trainer at S = 1 and 10 against ten one-model runs, and one evaluation")
    bm.add_argument("--nets", default="small,mnist2018", help="digit nets (default small,mnist2018)")
    bm.add_argument("--batch", type=int, default=16, help="sequences of 10 images per seed per step (default 16)")
    bm.add_argument("--steps", type=int, default=3, help="timed steps per measurement (default 3)")
    bm.add_argument("--repeat", type=int, default=2, help="timings per row; the fastest is kept (default 2)")
    bm.add_argument("--json", action="store_true", help="print a JSON list")
    return parser


def _train_config(args):
    from .engine.train import Regularizer, TrainConfig

    regs = {} if args.no_regularizer else dict(args.regularizer_defaults)
    for text in args.regularizer:
        unit, r = Regularizer.parse(text)
        regs[unit] = r.stored()
    return TrainConfig(iterations=args.iterations, batch_size=args.batch_size, learning_rate=args.learning_rate,
                       eval_every=args.eval_every, seeds=args.seeds, first_seed=args.first_seed, regularizers=regs,
                       optimizer=args.optimizer, grad_clip=args.grad_clip, lr_decay=args.lr_decay,
                       tensorboard=args.tensorboard)


def _print_summary(name: str, summary: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary))
        return
    print(name)
    for k, v in summary.items():
        if k != "threshold" or v is not None:
            print(f"  {k:32s} {v}")


def _short(v):
    """A value for people: long lists cut to their first 12 items."""
    if isinstance(v, list) and len(v) > 12:
        return f"{json.dumps(v[:12])[:-1]}, … ({len(v)} values)]"
    return json.dumps(v) if isinstance(v, (list, dict)) else v


def main(argv: list[str] | None = None) -> int:
    """The command; its exit status. Output into a closed pipe (``nalm units | head -1``) ends quietly with 141,
    the status a shell reports for a process ended by SIGPIPE."""
    try:
        try:
            return _main(argv)
        finally:  # --help's exit too: a closed pipe shows here, not as a traceback when Python flushes at exit
            sys.stdout.flush()
    except BrokenPipeError:  # the reader of our output has gone (workers fail as other errors)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # what is left unflushed goes nowhere
        return 128 + signal.SIGPIPE


def _main(argv: list[str] | None) -> int:
    try:
        parser = build_parser()
    except NalmError as e:  # a broken experiment plug-in
        print(f"nalm: error: {e}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    try:
        return _dispatch(args)
    except NalmError as e:
        print(f"nalm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nalm: interrupted; finished results are in the store, and the same command resumes", file=sys.stderr)
        return 130


def _only(text: str | None) -> list[str] | None:
    from .engine import list_experiments

    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in list_experiments()]
    if unknown or not names:
        raise ConfigError(f"--only: unknown experiment(s) {', '.join(unknown) or '(none given)'}; choose from: "
                          f"{', '.join(list_experiments())}")
    return names


def _dispatch(args) -> int:
    if getattr(args, "threads", 1) < 1:
        raise ConfigError(f"--threads must be at least 1, got {args.threads}")
    if args.command == "units":
        from .units import list_units, unit_class, unit_options

        for name in list_units():
            doc = " ".join((unit_class(name).__doc__ or "").strip().split("\n\n")[0].split())
            opts = ", ".join(f"{k}={v!r}" for k, v in unit_options(name).items()) or "-"
            print(f"{name:8s} {doc}\n{'':8s} options: {opts}")
        return 0
    if args.command == "run":
        from .engine import RunSpec, resolve_device, run, set_threads
        from .engine.store import Store

        set_threads(args.threads)
        device = resolve_device(args.device)
        spec = RunSpec(args.experiment, args.model, _task_options(args), _train_config(args))
        spec.task_config()  # option errors before the store is touched
        with Store(args.store) as store:
            summary = run(spec, store, progress=not args.no_progress, device=device)
        _print_summary(spec.name, summary, args.json)
        return 0
    if args.command == "sample":
        from .engine import get_experiment, make_config

        exp = get_experiment(args.experiment)
        if args.count < 1:
            raise ConfigError(f"--count must be at least 1, got {args.count}")
        config = make_config(exp.Config, _task_options(args))
        items = exp.sample(config, args.split, args.count, args.seed)
        for i, item in enumerate(items):
            if args.json:
                print(json.dumps(item))
            else:
                print(f"{args.experiment} {args.split} #{i}:")
                for k, v in item.items():
                    print(f"  {k}: {_short(v)}")
        if getattr(args, "png", None):
            exp.write_png(config, args.split, args.count, args.seed, args.png)
            print(f"wrote {args.png}", file=sys.stderr)
        return 0
    if args.command == "reproduce":
        from .engine import resolve_device
        from .engine.reproduce import reproduce

        ray_options = {k: getattr(args, k) for k in ("address", "seed_block", "max_in_flight", "max_retries",
                                                     "checkpoint_every")}
        for name in ("jobs", "seed_block", "max_in_flight"):
            if getattr(args, name) is not None and getattr(args, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
        if args.max_retries is not None and args.max_retries < 0:
            raise ConfigError(f"--max-retries must be at least 0, got {args.max_retries}")
        if args.checkpoint_every is not None and not args.checkpoint_every >= 0:
            raise ConfigError(f"--checkpoint-every must be a number of seconds >= 0, got {args.checkpoint_every}")
        if args.executor == "ray" and args.jobs is not None:
            raise ConfigError("--jobs is the local executor's; with --executor ray the cluster's CPUs set the "
                              "parallelism (see --max-in-flight)")
        if args.executor == "local":
            resolve_device(args.device)
        elif args.device.strip().lower().split(":")[0] not in ("cpu", "cuda", "auto"):
            raise ConfigError(f"unknown device {args.device!r}; use cpu, cuda, cuda:N or auto (a Ray worker "
                              f"checks that it has the device)")
        reproduce(args.profile, args.store, only=_only(args.only), jobs=args.jobs or os.cpu_count() or 1,
                  progress=not args.no_progress, device=args.device, executor=args.executor, shard=args.shard,
                  dry_run=args.dry_run, **ray_options)
        return 0
    if args.command == "merge":
        from .engine.store import Store

        with Store(args.out) as out:
            for path in args.stores:
                copied, present = out.merge(path)
                print(f"{path}: {copied} run(s) copied, {present} already in {args.out}")
        return 0
    if args.command == "report":
        from .engine.report import write_report

        path = write_report(args.store, args.out, only=_only(args.only), profile=args.profile_label)
        print(f"wrote {path}")
        return 0
    if args.command == "export":
        from .engine.store import Store

        with Store(args.store, readonly=True) as store:
            n = store.export(args.path, experiments=args.experiment)
        print(f"wrote {n} rows to {args.path}")
        return 0
    if args.command == "bench" and args.benchmark == "single-module":
        from .experiments.single_module.bench import bench_cli

        return bench_cli(args)
    if args.command == "bench" and args.benchmark == "mnist":
        from .experiments.mnist.bench import mnist_cli

        return mnist_cli(args)
    if args.command == "bench":
        from .experiments.arithmetic.bench import throughput_cli

        return throughput_cli(args)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
