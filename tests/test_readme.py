"""The usage example of README.md runs and prints what its comments promise."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nalm

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_usage_example_runs(tmp_path):
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- usage-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README.md lost its marked usage example"
    script = tmp_path / "usage.py"
    script.write_text(match.group(1), encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == str(nalm.list_units())
    product = float(re.search(r"tensor\(\[\[(-?[\d.e+]+)\]\]", lines[1]).group(1))
    assert abs(product - 300.0 * -70.0) < 1.0  # the NMU learnt on [1, 2] extrapolates to 300 · (−70)
