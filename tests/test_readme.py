"""The usage example of README.md runs and prints what its comments promise."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nalm

README = Path(__file__).resolve().parents[1] / "README.md"


def usage_example(text: str) -> str:
    """The marked usage example of a README's text."""
    match = re.search(r"<!-- usage-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README.md lost its marked usage example"
    return match.group(1)


def check_usage_output(stdout: str) -> None:
    """What the example's comments promise: the unit list, and the NMU's product far outside its training range."""
    lines = stdout.splitlines()
    assert lines[0] == str(nalm.list_units())
    product = float(re.search(r"tensor\(\[\[(-?[\d.e+]+)\]\]", lines[1]).group(1))
    assert abs(product - 300.0 * -70.0) < 1.0  # the NMU learnt on [1, 2] extrapolates to 300 · (−70)


def test_readme_usage_example_runs(tmp_path):
    script = tmp_path / "usage.py"
    script.write_text(usage_example(README.read_text(encoding="utf-8")), encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    check_usage_output(done.stdout)
