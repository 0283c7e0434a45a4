"""The documentation site: `mkdocs build --strict` passes (a broken link or reference fails it), and every registered
unit and experiment, plug-ins included, has its generated page. The tutorial notebooks run through nbmake
(`--nbmake` in pyproject's addopts; testpaths include docs/tutorials)."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest
from mkdocs.commands.build import build
from mkdocs.config import load_config
from test_plugins import toy  # noqa: F401  (the fixture: the toy experiment registered for one test)

import nalm
from nalm.engine import get_experiment, list_experiments
from nalm.engine.reporting import table

ROOT = Path(__file__).resolve().parents[1]


def _hook():
    spec = importlib.util.spec_from_file_location("registry_pages", ROOT / "docs" / "hooks" / "registry_pages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_site_builds_strict_with_a_page_per_unit_and_experiment(toy, tmp_path, monkeypatch):  # noqa: F811
    """Built in this process, so the toy experiment registered by the fixture must get its page like a built-in."""
    monkeypatch.chdir(ROOT)  # the snippets (CONTRIBUTING.md) are read relative to the repository root
    site = tmp_path / "site"
    build(load_config(str(ROOT / "mkdocs.yml"), site_dir=str(site), strict=True))  # raises Abort on any warning

    assert "toy-sum" in list_experiments()
    built = {p.stem for p in (site / "experiments").glob("*.html")} - {"index"}
    assert built == set(list_experiments())
    for name in list_experiments():
        page = (site / "experiments" / f"{name}.html").read_text(encoding="utf-8")
        for field in dataclasses.fields(get_experiment(name).Config):
            assert f"--{field.name.replace('_', '-')}" in page, (name, field.name)
    assert {p.stem for p in (site / "units").glob("*.html")} - {"index"} == set(nalm.list_units())
    for name in nalm.list_units():
        page = (site / "units" / f"{name}.html").read_text(encoding="utf-8")
        assert all(f"<code>{option}</code>" in page for option in nalm.unit_options(name)), name
    # The API reference renders the public modules (mkdocstrings' anchors are the objects' paths).
    api = {p.stem: p.read_text(encoding="utf-8") for p in (site / "api").glob("*.html")}
    assert 'id="nalm.engine.experiment.RunSpec"' in api["engine"]
    assert 'id="nalm.units.get_unit"' in api["units"]
    assert 'id="nalm.functional' in api["functional"]
    assert {"units-in-your-model", "your-own-unit"} <= {p.stem for p in (site / "tutorials").glob("*.html")}


def test_experiment_pages_show_the_shipped_verdicts(tmp_path):
    hook = _hook()
    name = list_experiments()[0]
    claims = get_experiment(name).claims
    assert claims, f"{name} has claims to show"
    page = hook.experiment_page(name, hook.shipped_verdicts(tmp_path / "missing.md"))
    assert "No shipped results yet" in page and claims[0].text in page
    # A claims table in the report's own format (nalm.engine.report writes it with reporting.table).
    report = tmp_path / "report.md"
    rows = [[name, claims[0].text, "**not reproduced**", "error 12.5 | median"]]
    other = table(["model", "task", "success", "solved at"], [["nau-nau", "a + b", "100 %", "5,000"]])
    report.write_text("\n".join(["# nalm results", "", "## The paper's claims", "",
                                  *table(["experiment", "claim", "answer", "numbers"], rows),
                                  "## Static arithmetic", "", *other]))
    verdicts = hook.shipped_verdicts(report)
    assert list(verdicts) == [(name, claims[0].text)]  # the claims table only, not the sections' tables
    page = hook.experiment_page(name, verdicts)
    assert f"| {claims[0].text} | not reproduced | error 12.5 \\| median |" in page
    if len(claims) > 1:
        assert "not in the shipped report" in page


@pytest.mark.parametrize("path", sorted((ROOT / "docs" / "tutorials").glob("*.ipynb")), ids=lambda p: p.stem)
def test_tutorials_are_on_the_site_and_collected(path):
    """Every notebook is in the nav (so it renders) and under pytest's testpaths (so nbmake runs it)."""
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert f"tutorials/{path.name}" in config
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '"docs/tutorials"' in pyproject and "--nbmake" in pyproject
