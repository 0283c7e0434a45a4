"""The ``nalm`` command line. ``nalm --help`` and ``nalm COMMAND --help`` explain every option."""

from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import NalmError

DEFAULT_STORE = os.path.join("results", "nalm.sqlite")


class _Parser(argparse.ArgumentParser):
    """argparse with exit code 2 and the error on stderr for every usage error (argparse's own convention)."""


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", default=DEFAULT_STORE, help=f"results database (default: {DEFAULT_STORE})")
    p.add_argument("--threads", type=int, default=1,
                   help="intra-op threads of this process (default 1: faster for models this small; "
                        "use --jobs in reproduce to fill more cores)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (there is none off a terminal)")


def _add_train(p: argparse.ArgumentParser, iterations: int, lr: float) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--seeds", type=int, default=10, help="number of seeds, trained together (default 10)")
    g.add_argument("--first-seed", type=int, default=0, help="seeds are FIRST..FIRST+SEEDS-1 (default 0)")
    g.add_argument("--iterations", type=int, default=iterations, help=f"training steps (default {iterations})")
    g.add_argument("--batch-size", type=int, default=128, help="rows per seed per step (default 128)")
    g.add_argument("--learning-rate", type=float, default=lr, help=f"Adam learning rate (default {lr})")
    g.add_argument("--eval-every", type=int, default=1000, help="steps between evaluations (default 1000)")
    g.add_argument("--regularizer", action="append", default=[], metavar="UNIT=SCALE:START:END",
                   help="sparsity regulariser ramp of a unit, repeatable (defaults: nau=0.01:5000:50000, "
                        "nmu=10:1000000:2000000)")
    g.add_argument("--no-regularizer", action="store_true", help="switch every regulariser off")


def _add_arithmetic(p: argparse.ArgumentParser, recurrent: bool) -> None:
    from .tasks.arithmetic import OPERATIONS

    g = p.add_argument_group("task")
    g.add_argument("--op", choices=list(OPERATIONS), default="add", help="target operation (default add)")
    g.add_argument("--model", default="nau-nmu",
                   help="UNIT-UNIT (e.g. nau-nmu, nalu-nalu, nac-nac_mul) or a baseline: "
                        + ("lstm, gru, rnn-tanh, rnn-relu" if recurrent else "relu6, relu, tanh, sigmoid, softsign, "
                           "selu, elu, linear") + " (default nau-nmu)")
    g.add_argument("--hidden-size", type=int, default=2, help="width of the hidden layer (default 2)")
    g.add_argument("--input-size", type=int, help="inputs " + ("per time step (default 10)" if recurrent else
                                                                 "(default 100)"))
    g.add_argument("--subset-ratio", type=float, help="size of each subset as a share of the inputs (default 0.25)")
    g.add_argument("--overlap-ratio", type=float, help="share of a subset the two subsets share (default 0.5)")
    g.add_argument("--subsets", help="fixed subsets as Python slices, e.g. 0:2,0:4 for t = (x1+x2)(x1+x2+x3+x4)")
    g.add_argument("--interpolation-range", help="training/validation range, e.g. 1,2 or -2,-1:1,2 (default 1,2); "
                                                 "write --interpolation-range=-2,-1 for a negative one")
    g.add_argument("--extrapolation-range", help="test range (default " + ("1,2: longer sequences" if recurrent
                                                                          else "2,6") + ")")
    if recurrent:
        g.add_argument("--train-length", type=int, help="time steps in training and interpolation (default 10)")
        g.add_argument("--test-length", type=int, help="time steps in extrapolation (default 100)")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="nalm", description="Neural arithmetic logic modules: train, benchmark and report.")
    parser.add_argument("--version", action="version", version=f"nalm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="train one configuration over many seeds and print its statistics")
    run_sub = run.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")
    for name, recurrent, text in (("arithmetic", False, "static arithmetic (Table 1, static; SPEC §3)"),
                                  ("arithmetic-recurrent", True, "recurrent arithmetic (Table 1, recurrent)")):
        p = run_sub.add_parser(name, help=text, description=text)
        _add_arithmetic(p, recurrent)
        _add_train(p, 50_000, 1e-3)
        _add_common(p)
    p = run_sub.add_parser("identity", help="Figure 1: an MLP learning the identity on [-5, 5]",
                           description="Figure 1: a 1-8-8-8-1 MLP learns y = x on [-5, 5], tested on [-20, 20].")
    p.add_argument("--activation", default="relu6", help="nonlinearity of the hidden layers (default relu6)")
    _add_train(p, 10_000, 1e-2)
    _add_common(p)

    rep = sub.add_parser("reproduce", help="run the experiment grid of a profile (resumable)")
    rep.add_argument("--profile", choices=["quick", "acceptance", "paper"], default="quick",
                     help="quick: about 15 minutes on 2 cores; acceptance: the 100-seed checks of the README "
                          "(about an hour); paper: the scale of SPEC §3 (days)")
    rep.add_argument("--only", help="comma-separated subset of: identity, arithmetic, arithmetic-recurrent, "
                                    "acceptance")
    rep.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                     help="worker processes, one configuration each (default: the number of cores)")
    rep.add_argument("--store", default=DEFAULT_STORE, help=f"results database (default: {DEFAULT_STORE})")
    rep.add_argument("--no-progress", action="store_true", help="no progress bar")

    rp = sub.add_parser("report", help="write the Markdown report and figures from the store")
    rp.add_argument("--store", default=DEFAULT_STORE, help=f"results database (default: {DEFAULT_STORE})")
    rp.add_argument("--out", default=os.path.join("results", "report.md"), help="report path (default results/report.md)")

    ex = sub.add_parser("export", help="write every finished run × seed as CSV or JSON")
    ex.add_argument("path", help="output file; the format follows its suffix (.csv or .json)")
    ex.add_argument("--store", default=DEFAULT_STORE, help=f"results database (default: {DEFAULT_STORE})")

    sub.add_parser("units", help="list the registered units and their options")

    bench = sub.add_parser("bench", help="benchmarks (never part of the tests)")
    bench_sub = bench.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    bt = bench_sub.add_parser("throughput", help="seed-iterations per second: reference loop vs seed-batched")
    bt.add_argument("--units", default="nau-nmu,nalu-nalu,relu6", help="models (default nau-nmu,nalu-nalu,relu6)")
    bt.add_argument("--seeds", default="1,10,100,1000", help="seed counts of the batched trainer (default 1,10,100,1000)")
    bt.add_argument("--steps", type=int, default=2000, help="training steps per measurement (default 2000)")
    bt.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    bt.add_argument("--repeat", type=int, default=1,
                    help="measure each row this many times, each in a fresh process, and keep the fastest "
                         "(default 1; use 3 or more on a machine shared with other work)")
    bt.add_argument("--json", action="store_true", help="print a JSON list")
    return parser


def _train_config(args, regularizers_default: bool = True):
    from dataclasses import asdict

    from .train import DEFAULT_REGULARIZERS, Regularizer, TrainConfig

    regs = {} if args.no_regularizer or not regularizers_default else {k: asdict(v) for k, v in
                                                                       DEFAULT_REGULARIZERS.items()}
    for text in args.regularizer:
        unit, r = Regularizer.parse(text)
        regs[unit] = asdict(r)
    return TrainConfig(iterations=args.iterations, batch_size=args.batch_size, learning_rate=args.learning_rate,
                       eval_every=args.eval_every, seeds=args.seeds, first_seed=args.first_seed, regularizers=regs)


def _spec(args):
    from .experiments import RunSpec

    if args.experiment == "identity":
        return RunSpec("identity", args.activation, {}, _train_config(args, regularizers_default=False), 8)
    keys = ("input_size", "subset_ratio", "overlap_ratio", "subsets", "interpolation_range", "extrapolation_range",
            "train_length", "test_length")
    task = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    task["operation"] = args.op
    return RunSpec(args.experiment, args.model, task, _train_config(args), args.hidden_size)


def _print_summary(name: str, summary: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary))
        return
    print(name)
    for k, v in summary.items():
        if k != "threshold" or v is not None:
            print(f"  {k:32s} {v}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _dispatch(args)
    except NalmError as e:
        print(f"nalm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nalm: interrupted; finished results are in the store, and the same command resumes", file=sys.stderr)
        return 130


def _dispatch(args) -> int:
    from .errors import ConfigError

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
        from .experiments import run, set_threads
        from .store import Store

        set_threads(args.threads)
        spec = _spec(args)
        with Store(args.store) as store:
            summary = run(spec, store, progress=not args.no_progress)
        _print_summary(spec.name, summary, args.json)
        return 0
    if args.command == "reproduce":
        from .profiles import reproduce

        if args.jobs < 1:
            raise ConfigError(f"--jobs must be at least 1, got {args.jobs}")
        reproduce(args.profile, args.store, only=args.only, jobs=args.jobs, progress=not args.no_progress)
        return 0
    if args.command == "report":
        from .report import write_report

        path = write_report(args.store, args.out)
        print(f"wrote {path}")
        return 0
    if args.command == "export":
        from .store import Store

        with Store(args.store) as store:
            n = store.export(args.path)
        print(f"wrote {n} rows to {args.path}")
        return 0
    if args.command == "bench":
        from .bench import throughput_cli

        return throughput_cli(args)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
