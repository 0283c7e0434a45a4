"""Runs that differ only in their seeds, read as one: five 20-seed runs with ``--first-seed`` 0, 20, 40, 60, 80 are
one 100-seed result in the report.

:class:`PooledStore` is a read-only view of a :class:`~nalm.engine.store.Store` with the store's reading methods
(``runs``, ``seeds``, ``curves``, ``artifact``). Its ``runs()`` groups the finished runs of one experiment whose
configurations are equal once ``train.first_seed`` and ``train.seeds`` are left out; a group whose seed ranges are
disjoint and together contiguous becomes one pooled run: its configuration has the union's first seed and seed
count, its per-seed rows are the members' in seed order, its summary is the experiment's own ``summarize`` over them
(exactly as a run trained in seed blocks is summarised, :func:`nalm.engine.executors.merge_blocks`), and its
``seeds``, ``curves`` and ``artifact`` read the members'. A group whose seeds overlap or leave a gap is not pooled: its
runs stay as they are (the report then uses the strongest, as before). A pooled run's ``key`` starts with ``pooled:``
and ``members`` lists the keys it was made of.
"""

from __future__ import annotations

import copy
import hashlib
import json

from .executors import merge_blocks
from .experiment import RunSpec
from .train import TrainConfig

__all__ = ["PooledStore", "seed_free"]


def seed_free(config: dict) -> str:
    """A run's configuration without the seeds it trained, as canonical JSON (equal for runs that pool)."""
    c = copy.deepcopy(config)
    for k in ("first_seed", "seeds"):
        c.get("train", {}).pop(k, None)
    return json.dumps(c, sort_keys=True)


def _seed_range(run: dict) -> range:
    t = run["config"]["train"]
    return range(t["first_seed"], t["first_seed"] + t["seeds"])


class PooledStore:
    """A read-only view of ``store`` in which runs that differ only in their seeds are one run (module docstring)."""

    def __init__(self, store) -> None:
        self.store = store
        self._members: dict[str, list[dict]] = {}
        self._artifacts: dict[str, dict] = {}

    def runs(self, experiment: str | None = None, status: str | None = "done") -> list[dict]:
        runs = self.store.runs(experiment, status)
        if status != "done":
            return runs
        groups: dict[tuple[str, str], list[dict]] = {}
        for r in runs:
            groups.setdefault((r["experiment"], seed_free(r["config"])), []).append(r)
        out = []
        for group in groups.values():
            group.sort(key=lambda r: r["config"]["train"]["first_seed"])
            seeds = [s for r in group for s in _seed_range(r)]
            if len(group) == 1 or seeds != list(range(seeds[0], seeds[0] + len(seeds))):
                out.extend(group)
            else:
                out.append(self._pool(group))
        return out

    def _pool(self, group: list[dict]) -> dict:
        first = group[0]
        config = copy.deepcopy(first["config"])
        config["train"]["seeds"] = sum(len(_seed_range(r)) for r in group)
        spec = RunSpec(first["experiment"], config["model"], config["task"], TrainConfig(**config["train"]))
        blocks = [{"first_seed": r["config"]["train"]["first_seed"], "seeds": r["config"]["train"]["seeds"],
                   "records": self.store.seeds(r["key"]), "artifacts": self.store.artifacts(r["key"]),
                   "seconds": r["seconds"] or 0.0} for r in group]
        result = merge_blocks(spec, blocks)
        keys = [r["key"] for r in group]
        key = "pooled:" + hashlib.sha256(" ".join(keys).encode()).hexdigest()[:16]
        self._members[key], self._artifacts[key] = group, result.artifacts
        summary = spec.exp.summarize(spec, result)
        return {**first, "key": key, "config": config, "summary": summary, "seconds": result.seconds,
                "members": keys}

    def seeds(self, key: str) -> list[dict]:
        if key not in self._members:
            return self.store.seeds(key)
        return [row for r in self._members[key] for row in self.store.seeds(r["key"])]

    def curves(self, key: str) -> list[dict]:
        if key not in self._members:
            return self.store.curves(key)
        rows = [row for r in self._members[key] for row in self.store.curves(r["key"])]
        return sorted(rows, key=lambda row: (row["seed"], row["step"]))

    def artifact(self, key: str, name: str):
        if key not in self._members:
            return self.store.artifact(key, name)
        return self._artifacts[key].get(name)

    def __getattr__(self, name: str):
        # anything else a report reads (e.g. checkpoint_step) is the store's own
        return getattr(self.store, name)
