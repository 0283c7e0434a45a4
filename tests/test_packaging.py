"""nalm as a user gets it: the sdist and the wheel build and pass ``twine check``; the wheel (not the source tree)
installs into a fresh virtual environment, where ``nalm --help``, the README's usage example and ``nalm sample``
run; the public API type-checks with mypy (configuration in pyproject.toml).

The fresh environment is made without pip and without the system's packages; the wheel goes in with this
environment's pip (``--no-deps``, no index), and its dependencies (torch, numpy) are borrowed from this environment by
a ``.pth`` line naming its site-packages. Python reads a ``.pth`` file only in a site directory, so the editable
install's own ``.pth`` (which points at ``src/``) in that borrowed folder is never read: ``import nalm`` can only
find the wheel's copy, which the test checks. Installing torch itself would take a minute and a gigabyte.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import site
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from test_readme import README, check_usage_output, usage_example

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.packaging


def _run(args, cwd, timeout=300, env=None) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, f"{' '.join(map(str, args))} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """``python -m build``: the sdist, then the wheel built from it (so the sdist must hold everything)."""
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT], cwd=out)
    return out


def test_sdist_and_wheel_build_and_pass_twine_check(dist):
    (wheel,), (sdist,) = dist.glob("nalm-*.whl"), dist.glob("nalm-*.tar.gz")
    version = importlib.metadata.version("nalm")
    assert wheel.name == f"nalm-{version}-py3-none-any.whl" and sdist.name == f"nalm-{version}.tar.gz"
    assert "PASSED" in _run([sys.executable, "-m", "twine", "check", "--strict", wheel, sdist], cwd=dist)
    names = zipfile.ZipFile(wheel).namelist()
    assert "nalm/py.typed" in names and "nalm/experiments/mnist/data.py" in names
    assert not any(n.startswith(("tests/", "src/")) for n in names)
    entry_points = zipfile.ZipFile(wheel).read(f"nalm-{version}.dist-info/entry_points.txt").decode()
    assert "nalm = nalm.cli:main" in entry_points and "[nalm.experiments]" in entry_points
    with tarfile.open(sdist) as tar:
        assert f"nalm-{version}/src/nalm/py.typed" in tar.getnames()


def test_the_wheel_installs_and_runs_in_a_fresh_venv(dist, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    python = venv / "bin" / "python"
    (wheel,) = dist.glob("nalm-*.whl")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", "--no-index", wheel],
         cwd=tmp_path)
    own = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path).strip())
    (own / "borrowed-dependencies.pth").write_text("".join(f"{p}\n" for p in site.getsitepackages()))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}

    where = json.loads(_run([python, "-c", "import json, sys, importlib.metadata as m, nalm; print(json.dumps("
                             "[nalm.__file__, str(m.distribution('nalm').locate_file('')), sys.path]))"],
                            cwd=tmp_path, env=env))
    assert Path(where[0]).is_relative_to(own), where[0]  # the wheel's copy, not the source tree
    assert Path(where[1]) == own  # and its metadata (entry points) first, before the borrowed editable install's
    assert not any(Path(p).resolve() == ROOT / "src" for p in where[2] if p)
    assert (own / "nalm" / "py.typed").is_file()

    nalm = venv / "bin" / "nalm"
    help_text = _run([nalm, "--help"], cwd=tmp_path, env=env)
    assert "reproduce" in help_text and "identity" in help_text  # built-ins found through the entry point
    script = tmp_path / "usage.py"
    script.write_text(usage_example(README.read_text(encoding="utf-8")), encoding="utf-8")
    check_usage_output(_run([python, script], cwd=tmp_path, env=env))
    sample = [json.loads(line) for line in _run([nalm, "sample", "identity", "--count", "2", "--json"],
                                                    cwd=tmp_path, env=env).splitlines()]
    assert len(sample) == 2 and all(s["target"] == s["x"] for s in sample)  # the identity task


def test_public_api_type_checks():
    """mypy over the modules and at the strictness in pyproject.toml ([tool.mypy])."""
    out = _run([sys.executable, "-m", "mypy"], cwd=ROOT)
    assert out.startswith("Success: no issues found")
