"""The Markdown report: tables, published numbers, settings, figures, and the edge cases (empty, missing store).

Stores are built by hand (Store.start_run / finish_run with made-up seed rows), never by training.
"""

from __future__ import annotations

import sys

import pytest

from nalm import DataError
from nalm.cli import main
from nalm.engine import RunSpec
from nalm.engine.metrics import summarize
from nalm.engine.report import write_report
from nalm.engine.store import Store, config_key
from nalm.engine.train import TrainConfig

PNG = b"\x89PNG\r\n\x1a\n"


def _records(n, *, success=0, diverged=0, interp=(0.02, 1.0), extrap=(0.5, 1.0), solved_at=4000):
    """n seed rows: the first `success` succeed, the next `diverged` diverge; MSEs (at best step, at init)."""
    rows = []
    for seed in range(n):
        ok, bad = seed < success, success <= seed < success + diverged
        rows.append({"seed": seed, "success": int(ok), "solved_at": solved_at if ok else None,
                     "sparsity_error": 0.001 if ok else 0.3, "diverged": int(bad), "diverged_at": 500 if bad else None,
                     "best_step": 1000, "interpolation_mse": interp[0], "interpolation_mse_init": interp[1],
                     "extrapolation_mse": float("nan") if bad else extrap[0], "extrapolation_mse_init": extrap[1]})
    return rows


def _add(store, spec: RunSpec, records=None, artifacts=None, summary=None, finish=True) -> str:
    config = spec.resolved()
    key = config_key(config)
    store.start_run(key, spec.experiment, spec.name, config)
    if finish:
        summary = summary or {**summarize(records), "threshold": 1.5e-5, "seconds": 1.0}
        store.finish_run(key, records or [], summary, 1.0, artifacts)
    return key


def _static(model, op, iterations=1000, seeds=4, **task):
    return RunSpec("arithmetic", model, {"operation": op, **task}, TrainConfig(iterations=iterations, seeds=seeds))


def _identity(store, activation, mae_outside, **task):
    xs = [x / 2 for x in range(-40, 41)]
    curve = {"x": xs, "mae": [0.01 if abs(x) <= 5 else mae_outside * abs(x) / 20 for x in xs], "models": 3,
             "train_range": [-5.0, 5.0]}
    summary = {"seeds": 3, "diverged": 0, "normalized_interpolation_error": 1.0,
               "normalized_extrapolation_error": 50.0, "mae_inside": 0.01, "mae_outside": mae_outside, "seconds": 1}
    spec = RunSpec("identity", activation, task, TrainConfig(iterations=500, seeds=3, learning_rate=1e-2,
                                                             regularizers={}))
    _add(store, spec, _records(3), {"error_curve": curve}, summary)


@pytest.fixture
def store_path(tmp_path):
    path = tmp_path / "results.sqlite"
    with Store(path) as store:
        _identity(store, "relu6", 7.25)
        _identity(store, "prelu", 0.0681)
        _add(store, _static("nau-nau", "add"), _records(4, success=4, extrap=(0.1234, 1.0)))  # 12.3
        _add(store, _static("nau-nmu", "mul"), _records(4, success=1))
        _add(store, _static("relu6", "add"), _records(4, diverged=3))
        rec = RunSpec("arithmetic-recurrent", "lstm", {"operation": "sub", "hidden_size": 16},
                      TrainConfig(iterations=300, seeds=4))
        _add(store, rec, _records(4, extrap=(0.456, 1.0)))
        key = _add(store, _static("nalu-nalu", "add", iterations=99), finish=False)  # in progress
        store.save_checkpoint(key, 50, {}, [{"seed": s, "step": 50, "interpolation_mse": 1.0,
                                             "extrapolation_mse": 2.0, "sparsity_error": 0.3} for s in (0, 1)])
    return path


def test_report_tables_published_and_figures(store_path, tmp_path):
    out = write_report(store_path, tmp_path / "out" / "report.md")
    assert out == tmp_path / "out" / "report.md"
    text = out.read_text()
    assert f"`{store_path}`" in text and "6 finished run(s), 1 in progress" in text and "nalm 0.1.0" in text
    assert "Wilson 95 %" in text and "ε = 10⁻⁵" in text
    # identity: the table and the figure
    assert "| relu6 | 3 of 3 | 0.01 | 7.25 |" in text and "| prelu | 3 of 3 | 0.01 | 0.0681 |" in text
    assert "(figure1_identity.png)" in text
    # Table 1 (static): rows in the paper's labels, our normalised errors, "inf" for relu6 (3 of 4 diverged)
    assert "| operation | nau-nmu | nau-nau | relu6 |" in text
    assert "| a + b | — | 12.3 | inf |" in text and "| a × b | 50.0 | — | — |" in text
    # success rates, ours and published, and the published scale
    assert "| nau-nau | 100 % [51, 100] | — |" in text and "| nau-nmu | — | 25 % [5, 70] |" in text
    assert "| nau-nau (NAU) | 100 % | 0 % |" in text and "| nau-nmu (NMU) | 0 % | 98 % |" in text
    assert "100 seeds × 5·10⁶ iterations" in text
    assert "| nau-nau | a + b | 4 of 4 | 4,000 | 18,000 | 1.00e-03 | 0 |" in text
    assert "| relu6 | a + b | 0 of 4 | n/a | — | n/a | 3 |" in text
    # recurrent section: its own tables, no published numbers, hidden size per model
    assert ("recurrent, 10 inputs per step, loss on the running target of every step 1–10, train 10 steps of "
            "U[-1, 1] → test 1000 and 100 steps of U[-1, 1], subset ratio 0.4, overlap 0.5, 1,000 evaluation rows, "
            "4 seeds" in text)
    assert "| a − b | 45.6 |" in text and "lstm: hidden size 16" in text
    # unfinished runs at the end
    tail = text[text.index("## In progress"):]
    assert "`arithmetic/nalu-nalu/add`" in tail and "checkpointed at step 50 of 99" in tail
    for name in ("figure1_identity.png", "success_rates_arithmetic.png", "success_rates_arithmetic-recurrent.png"):
        data = (out.parent / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 1000
        assert f"({name})" in text


def test_two_settings_give_two_sections_largest_first(tmp_path):
    path = tmp_path / "s.sqlite"
    with Store(path) as store:
        _add(store, _static("nau-nau", "add", iterations=1000, seeds=2), _records(2, success=2))
        _add(store, _static("nau-nau", "add", iterations=5000, seeds=3), _records(3, success=0))
        _add(store, _static("nau-nmu", "mul", iterations=1000, seeds=2, input_size=4, subsets="0:2,0:4"),
             _records(2, success=1))
    text = write_report(path, tmp_path / "r.md").read_text()
    big = "### static, 100 inputs, train U[1, 2] → test U[2, 6], 3 seeds × 5,000 iterations"
    small = "### static, 100 inputs, train U[1, 2] → test U[2, 6], 2 seeds × 1,000 iterations"
    four = "### static, 4 inputs, train U[1, 2] → test U[2, 6], fixed subsets 0:2,0:4, 2 seeds × 1,000 iterations"
    assert big in text and small in text and four in text
    assert text.index(big) < text.index(small)
    assert "| nau-nau | 0 % [0, 56] |" in text.split(big)[1].split("###")[0]
    assert "| nau-nau | 100 % [34, 100] |" in text.split(small)[1].split("###")[0]
    assert "| nau-nmu (NMU) | 94 % |" in text.split(four)[1]  # the published 4-input variant


def test_hyperparameters_split_columns_not_settings(tmp_path):
    path = tmp_path / "h.sqlite"
    with Store(path) as store:
        for h, e in ((2, 0.1), (4, 0.2)):
            spec = RunSpec("arithmetic", "nau-nau", {"operation": "add", "hidden_size": h},
                           TrainConfig(iterations=10, seeds=2))
            _add(store, spec, _records(2, extrap=(e, 1.0)))
    text = write_report(path, tmp_path / "r.md").read_text()
    assert text.count("### static") == 1
    assert "nau-nau [hidden size 2" in text and "nau-nau [hidden size 4" in text
    assert "| a + b | 10.0 | 20.0 |" in text


def test_settings_that_read_the_same_name_their_difference(tmp_path):
    path = tmp_path / "t.sqlite"
    with Store(path) as store:
        _identity(store, "relu6", 7.0)
        _identity(store, "relu6", 8.0, grid_points=81)
    text = write_report(path, tmp_path / "r.md").read_text()
    assert "(task.grid_points = 401)" in text and "(task.grid_points = 81)" in text
    assert (tmp_path / "figure1_identity.png").is_file() and (tmp_path / "figure1_identity_2.png").is_file()


def test_only_unfinished_runs(tmp_path):
    path = tmp_path / "u.sqlite"
    with Store(path) as store:
        _add(store, _static("nau-nau", "add"), finish=False)
    text = write_report(path, tmp_path / "r.md").read_text()
    assert "No results yet" in text and "- `arithmetic/nau-nau/add`" in text


def test_empty_store(tmp_path):
    path = tmp_path / "empty.sqlite"
    Store(path).close()
    text = write_report(path, tmp_path / "r.md").read_text()
    assert "No results yet" in text and "nalm reproduce --profile quick" in text
    assert not list(tmp_path.glob("*.png"))


def test_missing_store_raises_and_creates_nothing(tmp_path):
    path = tmp_path / "nope" / "missing.sqlite"
    with pytest.raises(DataError, match="missing.sqlite"):
        write_report(path, tmp_path / "r.md")
    assert not path.exists() and not path.parent.exists()


def test_without_matplotlib_tables_still_written(store_path, tmp_path, monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    out = write_report(store_path, tmp_path / "plain" / "report.md")
    text = out.read_text()
    assert "matplotlib is not installed" in text and "| a + b | — | 12.3 | inf |" in text
    assert not list(out.parent.glob("*.png")) and ".png)" not in text


def test_cli_report(store_path, tmp_path, capsys):
    out = tmp_path / "cli" / "report.md"
    assert main(["report", "--store", str(store_path), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out and out.is_file()
    assert main(["report", "--store", str(tmp_path / "none.sqlite"), "--out", str(out)]) == 2
    assert "none.sqlite" in capsys.readouterr().err
    folder = tmp_path / "folder"
    folder.mkdir()
    assert main(["report", "--store", str(store_path), "--out", str(folder)]) == 0  # a folder gets report.md
    assert (folder / "report.md").is_file()


def test_report_names_its_profile_date_and_commit(store_path, tmp_path, monkeypatch):
    import datetime
    import subprocess

    monkeypatch.chdir(tmp_path)  # not a git checkout: no commit
    text = write_report(store_path, tmp_path / "a.md", profile="acceptance").read_text()
    top = text.splitlines()[2]
    assert "profile acceptance" in top and datetime.date.today().isoformat() in top and "commit" not in top
    subprocess.run(["git", "init", "-q"], check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "x"],
                   check=True)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert f"at commit {head}." in write_report(store_path, tmp_path / "b.md").read_text().splitlines()[2]
