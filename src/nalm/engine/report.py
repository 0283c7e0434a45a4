"""The Markdown report of a results store (``nalm report``): the paper's claims and their answers, then each
experiment's section (its tables and figures), then the runs still in progress.

Reads only the store (:class:`nalm.engine.store.Store`, read-only), never logs. The report opens with one table of every
registered experiment's claims (SPEC §2), each answered *reproduced*, *not reproduced* or *not run* by its check
over the stored results, with the numbers behind the answer; each experiment then renders its own section
(:meth:`nalm.engine.Experiment.report`); runs that differ only in their seeds are pooled into one
(:mod:`nalm.engine.pooling`). matplotlib is optional (``pip install 'nalm[report]'``): without it the
tables are written and the figures skipped.
"""

from __future__ import annotations

import datetime
import os
import subprocess
from pathlib import Path

from nalm import __version__
from nalm.errors import DataError

from .experiment import NOT_REPRODUCED, REPRODUCED, ReportContext, get_experiment, list_experiments
from .reporting import new_figure, table
from .pooling import PooledStore
from .store import Store

__all__ = ["write_report"]


def _claims(contexts: dict[str, ReportContext]) -> list[str]:
    rows = []
    for name, ctx in contexts.items():
        for claim in get_experiment(name).claims:
            v = claim.verdict(ctx)
            why = v.why or ("—" if v.answer == REPRODUCED else "*not yet known*" if v.answer == NOT_REPRODUCED else "")
            rows.append([name, claim.text, f"**{v.answer}**", v.evidence, why])
    if not rows:
        return []
    return ["## The paper's claims", "",
            "Each claim of the paper, checked against the results in this store (the strongest run of each model: "
            "most seeds × iterations; runs that differ only in their seeds count as one). *Why*: for a claim that "
            "is not reproduced, its cause and the run that shows it, where one is known. The numbers behind each "
            "answer are in the experiment's section below.", "",
            *table(["experiment", "claim", "answer", "numbers", "why"], rows)]


def _provenance(store_path: Path, done: int, running: int, profile: str | None) -> str:
    """Where the numbers come from: store, runs, profile, date, nalm version and commit."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return (f"Store `{store_path}`: {done} finished run(s), {running} in progress"
            + (f"; profile {profile}" if profile else "") + f"; written {datetime.date.today().isoformat()} by nalm "
            f"{__version__}" + (f" at commit {commit}" if commit else "") + ".")


def _in_progress(store: Store, running: list[dict]) -> list[str]:
    lines = ["## In progress", "", "Unfinished runs (the same command resumes them from their last checkpoint):", ""]
    for r in running:
        step = store.checkpoint_step(r["key"])
        its = r["config"]["train"]["iterations"]
        done = f"checkpointed at step {step:,} of {its:,}" if step is not None else f"not started (of {its:,} steps)"
        lines.append(f"- `{r['name']}`: {done}")
    return lines + [""]


def write_report(store_path: str | Path, out_path: str | Path, only: list[str] | None = None,
                 profile: str | None = None) -> Path:
    """Write the Markdown report of the store at ``store_path`` to ``out_path``, figures beside it; return its path.

    ``only`` restricts it to those experiments (an existing folder, or a path ending in "/", gets ``report.md`` inside); ``profile`` is named at the top with the date, the nalm version and
    the git commit of the working directory (when it is a git checkout). An existing folder as ``out_path`` gets ``report.md`` inside it.
    Raises DataError when the store does not exist (it is never created here).
    """
    store_path, out = Path(store_path), Path(out_path)
    if out.is_dir() or str(out_path).endswith(("/", os.sep)):  # a folder, existing or to be made
        out = out / "report.md"
    if not store_path.is_file():
        raise DataError(f"results store {store_path} not found; make results first, e.g. "
                        f"`nalm reproduce --profile quick --store {store_path}`")
    out.parent.mkdir(parents=True, exist_ok=True)
    names = list_experiments() if only is None else only
    with Store(store_path, readonly=True) as raw:
        store = PooledStore(raw)  # runs that differ only in their seeds are read as one
        done = [r for r in store.runs() if r["experiment"] in names or only is None]
        running = [r for r in store.runs(status="running") if r["experiment"] in names or only is None]
        lines = ["# nalm results", "", _provenance(store_path, len(done), len(running), profile), ""]
        if not done:
            lines += ["**No results yet.** Make them with `nalm reproduce --profile quick`, then run `nalm report` "
                      "again.", ""]
        elif new_figure() is None:
            lines += ["*matplotlib is not installed, so the figures were skipped: "
                      "`pip install 'nalm[report]'` adds it.*", ""]
        contexts = {n: ReportContext(store, [r for r in done if r["experiment"] == n], out.parent) for n in names}
        lines += _claims(contexts)
        for name, ctx in contexts.items():
            if ctx.runs:
                lines += get_experiment(name).report(ctx)
        other = sorted({r["experiment"] for r in done} - set(list_experiments()))
        if other:
            lines += [f"Not reported here: runs of {', '.join(other)} (no such experiment is registered).", ""]
        if running:
            lines += _in_progress(store, running)
    out.write_text("\n".join(lines), encoding="utf-8")
    return out
