"""The command line: usage errors exit 2 and name the bad option; a tiny run prints the JSON the README shows."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest

from nalm.cli import main

TINY = ["--seeds", "2", "--iterations", "200", "--eval-every", "100", "--input-size", "10", "--no-progress"]


def run_cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("args, needle", [
    (["run", "arithmetic", "--op", "pow"], "invalid choice: 'pow'"),
    (["run", "arithmetic", "--model", "nau-foo"], "unknown model 'nau-foo'"),
    (["run", "arithmetic", "--seeds", "0"], "seeds must be a positive integer"),
    (["run", "arithmetic", "--interpolation-range", "1;2"], "cannot parse range '1;2'"),
    (["run", "arithmetic", "--interpolation-range=3,1"], "low < high"),
    (["run", "arithmetic", "--input-size", "10", "--subset-ratio", "0.9"], "subsets span"),
    (["run", "arithmetic", "--op", "root", "--extrapolation-range=-6,-2"], "non-negative"),
    (["run", "arithmetic", "--regularizer", "nmu=10"], "cannot parse regulariser"),
    (["run", "identity", "--activation", "swish"], "unknown activation 'swish'"),
    (["reproduce", "--only", "tables"], "unknown experiment(s) tables"),
    (["run", "arithmetic", "--threads", "0"], "--threads must be at least 1"),
    (["frobnicate"], "invalid choice"),
    (["bench", "throughput", "--repeat", "0"], "--repeat must be positive"),
    (["bench", "throughput", "--seeds", "10,x"], "--seeds must be comma-separated integers"),
    (["bench", "throughput", "--units", "nau-foo"], "unknown model 'nau-foo'"),
])
def test_usage_errors_exit_2_and_name_the_problem(args, needle, capsys, tmp_path):
    args = args[:1] + (["--store", str(tmp_path / "s.sqlite")] if args[0] == "reproduce" else []) + args[1:]
    if args[0] == "run" and len(args) > 1:
        args += ["--store", str(tmp_path / "s.sqlite")]
    try:
        code = main(args)
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err


def test_run_json_has_the_documented_keys(capsys, tmp_path):
    code, out, _ = run_cli(["run", "arithmetic", "--op", "add", "--model", "nau-nau", "--json",
                            "--store", str(tmp_path / "s.sqlite"), *TINY], capsys)
    assert code == 0
    result = json.loads(out)
    for key in ("success_rate", "success_ci", "solved_at_median", "sparsity_error_mean",
                "normalized_extrapolation_error", "seeds", "diverged"):
        assert key in result
    assert result["seeds"] == 2 and len(result["success_ci"]) == 2
    code, out2, _ = run_cli(["run", "arithmetic", "--op", "add", "--model", "nau-nau", "--json",
                             "--store", str(tmp_path / "s.sqlite"), *TINY], capsys)
    assert json.loads(out2) == result  # the second call is answered from the store


def test_export_and_units(capsys, tmp_path):
    store = str(tmp_path / "s.sqlite")
    assert run_cli(["run", "arithmetic", "--model", "nac-nac", "--store", store, *TINY], capsys)[0] == 0
    code, out, _ = run_cli(["export", str(tmp_path / "x.json"), "--store", store], capsys)
    assert code == 0 and "wrote 2 rows" in out
    rows = json.loads((tmp_path / "x.json").read_text())
    assert {r["seed"] for r in rows} == {0, 1} and rows[0]["name"] == "arithmetic/nac-nac/add"
    code, out, _ = run_cli(["units"], capsys)
    assert code == 0 and "nmu" in out and "gate='input'" in out


def test_bench_throughput_json_rows(capsys):
    # Tiny and untimed: what is checked is the shape of the output, never the speed.
    code, out, _ = run_cli(["bench", "throughput", "--units", "nau-nmu", "--seeds", "3", "--steps", "20", "--json"],
                           capsys)
    assert code == 0
    rows = json.loads(out)
    assert [(r["mode"], r["seeds"]) for r in rows] == [("reference", 1), ("batched", 3)]
    for r in rows:
        assert set(r) == {"mode", "model", "seeds", "processes", "threads", "seed_iterations_per_s", "peak_rss_mb"}
        assert r["model"] == "nau-nmu" and r["processes"] == 1 and r["threads"] == 1
        assert r["seed_iterations_per_s"] > 0 and r["peak_rss_mb"] > 0


def test_dry_run_prints_the_plan_and_leaves_the_store_untouched(capsys, tmp_path):
    from toy_experiment import Toy

    from nalm.engine import (PROFILES, get_experiment, list_experiments, register_experiment, run,
                             unregister_experiment)
    from nalm.engine.reproduce import specs
    from nalm.engine.store import Store, config_key

    missing = tmp_path / "missing.sqlite"
    for profile in PROFILES:  # every experiment with configurations in the profile has its plan and cost
        code, out, _ = run_cli(["reproduce", "--profile", profile, "--dry-run", "--store", str(missing)], capsys)
        assert code == 0 and not missing.exists() and "nothing trained or written" in out.splitlines()[-1]
        for name in list_experiments():
            if get_experiment(name).grid(profile):
                assert f"\n{name}: " in f"\n{out}" and "core-minutes" in out, (profile, name)
        if profile == "acceptance":  # a replication on later seeds names them
            assert "mnist-parity/tanh/20k  5 seeds (5–9) × 2,000 steps" in out
    register_experiment(Toy)
    try:  # a store that holds one configuration of toy-sum's quick grid (6 configurations)
        grid = specs("quick", ["toy-sum"])
        store = tmp_path / "s.sqlite"
        with Store(store) as s:
            run(grid[0], s)
        before = (store.read_bytes(), store.stat().st_mtime_ns)
        for extra, todo in (([], 5), (["--shard", "0/2"], 2), (["--executor", "ray"], 5)):
            code, out, _ = run_cli(["reproduce", "--only", "toy-sum", "--dry-run", "--store", str(store), *extra],
                                   capsys)
            assert code == 0 and f"toy-sum: {todo} to run, 1 already in the store" in out
            assert f"stored {config_key(grid[0].resolved())}" in out and out.count("\n  run ") == todo
            assert (store.read_bytes(), store.stat().st_mtime_ns) == before
    finally:
        unregister_experiment("toy-sum")


@pytest.mark.parametrize("args", [["units"], ["sample", "identity", "--count", "3"]])
def test_output_into_a_closed_pipe_ends_quietly(args):
    command = [sys.executable, "-m", "nalm", *args]
    out = subprocess.run(f"{shlex.join(command)} | head -1", shell=True, capture_output=True, text=True)
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 1 and out.stderr == ""
    r, w = os.pipe()
    os.close(r)  # the reader is gone before the first line: every write fails
    try:
        gone = subprocess.run(command, stdout=w, stderr=subprocess.PIPE, text=True)
    finally:
        os.close(w)
    assert gone.returncode == 141 and gone.stderr == ""  # 128 + SIGPIPE, as a shell reports a process it ended
