"""MkDocs hook: the pages of every registered unit and experiment, written from nalm's registries at build time.

A unit registered with ``@register_unit`` gets ``units/<name>.md`` from its class docstring (the equation, the paper,
what it learns and what it cannot), its module's docstring (the family and the paper's title) and
``unit_options(name)``; an experiment registered with ``@register_experiment`` gets ``experiments/<name>.md`` from
its help, description, Config fields, models, training defaults and claims, with each claim's latest verdict from
``docs/results/report.md`` when that file exists. Nothing here names a unit or an experiment, so a new one appears
on the site without touching the docs. ``tests/test_docs.py`` checks that every registered name has its page.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

from mkdocs.structure.files import File

import nalm
from nalm.engine import get_experiment, list_experiments
from nalm.units import unit_class, unit_options

#: Where the shipped report lives (written by `nalm report --out docs/results/report.md`); optional.
REPORT = Path(__file__).resolve().parents[1] / "results" / "report.md"


def _doc(obj) -> str:
    return inspect.getdoc(obj) or ""


def _first(text: str) -> str:
    """The first paragraph of a docstring, on one line."""
    return " ".join(text.split("\n\n")[0].split())


def family(name: str) -> str:
    """A unit's family: its module's docstring up to the first colon (e.g. "NAU and NMU")."""
    head = _first(_doc(inspect.getmodule(unit_class(name))))
    return head.split(":")[0].strip() or unit_class(name).__module__


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(_cell(c) for c in r) + " |" for r in rows), ""]


#: The methods a unit page lists, where the unit has them (the ones a training loop calls).
METHODS = ("forward", "reset_parameters", "regularization_loss", "post_step", "seed_module")


# -- units -----------------------------------------------------------------------------------------------------------
def _signature(method) -> str:
    return str(inspect.signature(method)).replace("(self, ", "(").replace("(self)", "()").replace("'", "")


def unit_title(name: str) -> str:
    return f"`{name}`: {unit_class(name).__name__}"


def unit_page(name: str) -> str:
    cls, options = unit_class(name), unit_options(name)
    path = f"{cls.__module__}.{cls.__name__}"
    lines = [f"# {unit_title(name)}", "", f"*Family:* {_first(_doc(inspect.getmodule(cls)))}", "",
             # The docstring holds the equation, the paper and what the unit can and cannot learn.
             _doc(cls), "", "## Options", ""]
    if options:
        lines += _table(["option", "default"], [[f"`{k}`", f"`{v!r}`"] for k, v in options.items()])
    else:
        lines += ["None beyond the shape (`in_features`, `out_features`), `num_seeds`, `device` and `dtype`.", ""]
    call = ", ".join(f"{k}={v!r}" for k, v in options.items())
    lines += ["## A minimal example", "", "```python", "import torch", "import nalm", "",
              f"unit = nalm.get_unit({name!r}, 4, 2{', ' + call if call else ''})   # like nn.Linear(4, 2)",
              "y = unit(torch.rand(32, 4) + 1)                  # (B, in) -> (B, out) = (32, 2)",
              f"units = nalm.get_unit({name!r}, 4, 2, num_seeds=10)   # 10 independent seeds as one module",
              "y = units(torch.rand(10, 32, 4) + 1)             # (S, B, in) -> (S, B, out)", "```", "",
              "Train it like any `nn.Module`; call `unit.post_step()` after each optimiser step when the unit has a "
              "constraint and add `unit.regularization_loss()` when it has a regulariser (the tutorial "
              "[Units in your own model](../tutorials/units-in-your-model.ipynb) does both). Every experiment that "
              f"takes unit names accepts `{name}`, e.g. `nalm run arithmetic --model {name}-{name}`.", "",
              "## Methods", "", *_table(["method", "what it does"], [[f"`{m}{_signature(getattr(cls, m))}`",
                                                              _first(_doc(getattr(cls, m)))] for m in METHODS
                                                             if callable(getattr(cls, m, None))]),
              f"The whole API: [`nalm.units`](../api/units.md); the class is `{path}`.", ""]
    return "\n".join(lines)


def units_index() -> str:
    rows = [[f"[`{n}`]({n}.md)", unit_class(n).__name__, family(n), _first(_doc(unit_class(n))),
             ", ".join(f"`{k}={v!r}`" for k, v in unit_options(n).items()) or "—"] for n in nalm.list_units()]
    return "\n".join(["# Units", "",
                      "Every registered unit (`nalm.list_units()`), written from the registry when the site is built: "
                      "its page gives its equation and paper, what it can and cannot learn, its options and an "
                      "example. Every unit is shaped like `nn.Linear` and takes a seed axis (`num_seeds=S`).", "",
                      *_table(["name", "class", "family", "what it computes", "options"], rows)])


# -- experiments -----------------------------------------------------------------------------------------------------
def shipped_verdicts(path: Path = REPORT) -> dict[tuple[str, str], tuple[str, str]] | None:
    """(experiment, claim) -> (answer, numbers) from the claims table of the shipped report; None without one."""
    if not path.is_file():
        return None
    verdicts, in_claims = {}, False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):  # the claims table is the section "## The paper's claims" (nalm.engine.report)
            in_claims = line.startswith("## The paper's claims")
        cells = line.strip().strip("|").split(" | ")
        if in_claims and line.startswith("| ") and len(cells) >= 4 and cells[0].strip() != "experiment":
            name, claim, answer = (c.strip() for c in cells[:3])
            verdicts[name, claim] = (answer.strip("*"), " | ".join(cells[3:]).strip())
    return verdicts


def _option(f: dataclasses.Field) -> list[str]:
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    flags = [f"--{f.name.replace('_', '-')}", *f.metadata.get("flags", ())]
    choices = f.metadata.get("choices")
    text = f.metadata.get("help", "") + (f" (one of {', '.join(map(str, choices))})" if choices else "")
    if f.metadata.get("runtime"):
        text += " (not part of the stored configuration)"
    return [" ".join(f"`{x}`" for x in flags), f"`{default!r}`", text or "—"]


def experiment_page(name: str, verdicts) -> str:
    exp = get_experiment(name)
    lines = [f"# `{name}`", "", f"*{exp.help}*", "", exp.description or "", "",
             f"Run it: `nalm run {name} [options]`; look at its data: `nalm sample {name}`; "
             f"in a sweep: `nalm reproduce --only {name}`. Registered by `{type(exp).__module__}`.", "",
             "## Task options", "", "Fields of its `Config`; each is an option of `nalm run` and `nalm sample`.", "",
             *_table(["option", "default", "meaning"], [_option(f) for f in dataclasses.fields(exp.Config)]),
             "## Models", "",
             f"{(exp.model_help or 'The models it accepts').rstrip('.')}. Default: `{exp.default_model}`.", ""]
    if exp.models:
        lines += ["The paper's rows: " + ", ".join(f"`{m}`" for m in exp.models) + ".", ""]
    if exp.train_defaults:
        lines += ["Training defaults of `nalm run`: "
                  + ", ".join(f"`{k}={v!r}`" for k, v in exp.train_defaults.items()) + ".", ""]
    lines += ["## Claims", ""]
    if not exp.claims:
        return "\n".join(lines + ["This experiment checks no claim of the paper.", ""])
    if verdicts is None:
        lines += ["No shipped results yet: run `nalm reproduce` and `nalm report` to answer these claims.", ""]
        return "\n".join(lines + [f"- {c.text}" for c in exp.claims] + [""])
    rows = [[c.text, *verdicts.get((name, c.text), ("not in the shipped report", ""))] for c in exp.claims]
    return "\n".join(lines + ["The latest verdicts, from the shipped report (`docs/results/report.md`):", "",
                              *_table(["claim", "answer", "numbers"], rows)])


def experiments_index() -> str:
    rows = [[f"[`{n}`]({n}.md)", get_experiment(n).help, str(len(get_experiment(n).claims))]
            for n in list_experiments()]
    return "\n".join(["# Experiments", "",
                      "Every registered experiment (`nalm.engine.list_experiments()`, built-ins and plug-ins), "
                      "written from the registry when the site is built.", "",
                      *_table(["name", "what", "claims"], rows)])


# -- the hook --------------------------------------------------------------------------------------------------------
def pages() -> dict[str, str]:
    """Every generated page: its path under docs/ and its Markdown."""
    verdicts = shipped_verdicts()
    out = {"units/index.md": units_index(), "experiments/index.md": experiments_index()}
    out |= {f"units/{n}.md": unit_page(n) for n in nalm.list_units()}
    out |= {f"experiments/{n}.md": experiment_page(n, verdicts) for n in list_experiments()}
    return out


def on_config(config):
    """Put the generated pages into the nav: units grouped by family under "Units", experiments under "Experiments"."""
    families: dict[str, list] = {}
    for n in nalm.list_units():
        families.setdefault(family(n), []).append({unit_title(n).replace("`", ""): f"units/{n}.md"})
    sections = {"units/index.md": ["units/index.md", *({f: p} for f, p in families.items())],
                "experiments/index.md": ["experiments/index.md",
                                         *({n: f"experiments/{n}.md"} for n in list_experiments())]}
    for entry in config["nav"]:
        for title, target in entry.items():
            if isinstance(target, str) and target in sections:
                entry[title] = sections[target]
    return config


def on_files(files, config):
    for path, text in pages().items():
        files.append(File.generated(config, path, content=text))
    return files
