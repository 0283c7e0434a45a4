"""The results database: SQLite, written in transactions, the single source of every table and figure.

Tables:
  runs(key, experiment, name, config, status, summary, seconds, created, finished)
      one row per configuration; ``config`` is the full resolved configuration as JSON, ``key`` its hash.
  seeds(key, seed, ...)      one row per configuration × seed with its final statistics.
  curves(key, seed, step, interpolation_mse, extrapolation_mse, sparsity_error)   the evaluation curves.
  artifacts(key, name, data) JSON results that are not per seed (e.g. Figure 1's error against input).
  checkpoints(key, step, state)   the latest checkpoint of an unfinished run (deleted when it finishes).

A run writes its curve rows and its checkpoint in one transaction, so after a crash (even ``kill -9``) the store
holds a consistent prefix of the run, and running the same command again resumes from it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from .errors import DataError

SCHEMA_VERSION = 1
SEED_COLUMNS = ("success", "solved_at", "sparsity_error", "diverged", "diverged_at", "best_step",
                "interpolation_mse", "extrapolation_mse", "interpolation_mse_init", "extrapolation_mse_init")
CURVE_COLUMNS = ("seed", "step", "interpolation_mse", "extrapolation_mse", "sparsity_error")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY, experiment TEXT NOT NULL, name TEXT NOT NULL, config TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'done')), summary TEXT, seconds REAL,
    created REAL NOT NULL, finished REAL);
CREATE TABLE IF NOT EXISTS seeds (
    key TEXT NOT NULL REFERENCES runs(key) ON DELETE CASCADE, seed INTEGER NOT NULL,
    success INTEGER, solved_at INTEGER, sparsity_error REAL, diverged INTEGER NOT NULL, diverged_at INTEGER,
    best_step INTEGER, interpolation_mse REAL, extrapolation_mse REAL, interpolation_mse_init REAL,
    extrapolation_mse_init REAL, PRIMARY KEY (key, seed));
CREATE TABLE IF NOT EXISTS curves (
    key TEXT NOT NULL REFERENCES runs(key) ON DELETE CASCADE, seed INTEGER NOT NULL, step INTEGER NOT NULL,
    interpolation_mse REAL, extrapolation_mse REAL, sparsity_error REAL, PRIMARY KEY (key, seed, step));
CREATE TABLE IF NOT EXISTS artifacts (
    key TEXT NOT NULL REFERENCES runs(key) ON DELETE CASCADE, name TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (key, name));
CREATE TABLE IF NOT EXISTS checkpoints (
    key TEXT PRIMARY KEY REFERENCES runs(key) ON DELETE CASCADE, step INTEGER NOT NULL, state BLOB NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('schema_version', '{SCHEMA_VERSION}');
"""


def config_key(config: dict) -> str:
    """The hash of a resolved configuration (canonical JSON): equal configurations share one run."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:20]


def _nan_to_none(v):
    return None if isinstance(v, float) and v != v else v


class Store:
    """A results database in one SQLite file (created with its folder when missing, unless ``readonly``)."""

    def __init__(self, path: str | Path, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly and not self.path.is_file():
            raise DataError(f"results store {self.path} not found")
        try:
            if readonly:
                self.conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=60)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.conn = sqlite3.connect(self.path, timeout=60)
                self.conn.execute("PRAGMA foreign_keys = ON")
                self.conn.execute("PRAGMA journal_mode = WAL")  # readers never block the writing workers
                with self.conn:
                    self.conn.executescript(_SCHEMA)
            version = self.conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()[0]
        except sqlite3.DatabaseError as e:
            raise DataError(f"{self.path} is not a nalm results database ({e})") from None
        if int(version) != SCHEMA_VERSION:
            raise DataError(f"{self.path} has schema version {version}; this nalm reads version {SCHEMA_VERSION}")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- runs ----------------------------------------------------------------------------------------------------
    def run(self, key: str) -> dict | None:
        row = self.conn.execute("SELECT key, experiment, name, config, status, summary, seconds FROM runs "
                                "WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return {"key": row[0], "experiment": row[1], "name": row[2], "config": json.loads(row[3]),
                "status": row[4], "summary": json.loads(row[5]) if row[5] else None, "seconds": row[6]}

    def start_run(self, key: str, experiment: str, name: str, config: dict) -> None:
        """Register a run (no-op when it is already there: a resumed run keeps its row and checkpoint)."""
        with self.conn:
            self.conn.execute("INSERT OR IGNORE INTO runs (key, experiment, name, config, status, created) "
                              "VALUES (?, ?, ?, ?, 'running', ?)",
                              (key, experiment, name, json.dumps(config, sort_keys=True), time.time()))

    def save_checkpoint(self, key: str, step: int, state: dict, curve_rows: Iterable[Sequence]) -> None:
        """Write new curve rows and the checkpoint at ``step`` in one transaction."""
        buf = io.BytesIO()
        torch.save(state, buf)
        with self.conn:
            self.conn.executemany(f"INSERT OR REPLACE INTO curves (key, {', '.join(CURVE_COLUMNS)}) "
                                  f"VALUES (?, ?, ?, ?, ?, ?)",
                                  [(key, *map(_nan_to_none, r)) for r in curve_rows])
            self.conn.execute("INSERT OR REPLACE INTO checkpoints (key, step, state) VALUES (?, ?, ?)",
                              (key, step, buf.getvalue()))

    def load_checkpoint(self, key: str) -> tuple[int, dict] | None:
        """The latest checkpoint of an unfinished run, loaded with ``weights_only=True``."""
        row = self.conn.execute("SELECT step, state FROM checkpoints WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            return row[0], torch.load(io.BytesIO(row[1]), weights_only=True)
        except Exception as e:  # a damaged blob: say so rather than resume from garbage
            raise DataError(f"the checkpoint of run {key} in {self.path} is unreadable ({e}); "
                            f"restart that run from the beginning with: sqlite3 {self.path} "
                            f"\"DELETE FROM checkpoints WHERE key = '{key}'\"") from None

    def finish_run(self, key: str, seed_rows: list[dict], summary: dict, seconds: float,
                   artifacts: dict[str, object] | None = None) -> None:
        """Store the final per-seed rows, summary and artifacts, and drop the checkpoint: one transaction.

        The curves are already in: each checkpoint wrote those evaluated since the one before.
        """
        with self.conn:
            self.conn.executemany(
                f"INSERT OR REPLACE INTO seeds (key, seed, {', '.join(SEED_COLUMNS)}) "
                f"VALUES (?, ?, {', '.join('?' * len(SEED_COLUMNS))})",
                [(key, r["seed"], *(_nan_to_none(r.get(c)) for c in SEED_COLUMNS)) for r in seed_rows])
            for name, data in (artifacts or {}).items():
                self.conn.execute("INSERT OR REPLACE INTO artifacts (key, name, data) VALUES (?, ?, ?)",
                                  (key, name, json.dumps(data)))
            self.conn.execute("UPDATE runs SET status = 'done', summary = ?, seconds = ?, finished = ? WHERE key = ?",
                              (json.dumps(summary), seconds, time.time(), key))
            self.conn.execute("DELETE FROM checkpoints WHERE key = ?", (key,))

    def checkpoint_step(self, key: str) -> int | None:
        """The step of a run's latest checkpoint, without loading it."""
        row = self.conn.execute("SELECT step FROM checkpoints WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    # -- reading -------------------------------------------------------------------------------------------------
    def runs(self, experiment: str | None = None, status: str | None = "done") -> list[dict]:
        sql, args = "SELECT key FROM runs WHERE 1=1", []
        if experiment is not None:
            sql, args = sql + " AND experiment = ?", args + [experiment]
        if status is not None:
            sql, args = sql + " AND status = ?", args + [status]
        return [self.run(k) for (k,) in self.conn.execute(sql + " ORDER BY created", args)]

    def seeds(self, key: str) -> list[dict]:
        cols = ("seed",) + SEED_COLUMNS
        rows = self.conn.execute(f"SELECT {', '.join(cols)} FROM seeds WHERE key = ? ORDER BY seed", (key,))
        return [dict(zip(cols, r)) for r in rows]

    def curves(self, key: str) -> list[dict]:
        rows = self.conn.execute(f"SELECT {', '.join(CURVE_COLUMNS)} FROM curves WHERE key = ? "
                                 f"ORDER BY seed, step", (key,))
        return [dict(zip(CURVE_COLUMNS, r)) for r in rows]

    def artifact(self, key: str, name: str):
        row = self.conn.execute("SELECT data FROM artifacts WHERE key = ? AND name = ?", (key, name)).fetchone()
        return None if row is None else json.loads(row[0])

    def export(self, path: str | Path, fmt: str | None = None) -> int:
        """Write one row per finished run × seed (config, summary and seed statistics) as CSV or JSON."""
        path = Path(path)
        fmt = fmt or path.suffix.lstrip(".")
        rows = []
        for run in self.runs():
            for s in self.seeds(run["key"]):
                rows.append({"key": run["key"], "experiment": run["experiment"], "name": run["name"],
                             "config": json.dumps(run["config"], sort_keys=True), **s})
        if fmt == "json":
            path.write_text(json.dumps(rows, indent=1))
        elif fmt == "csv":
            with path.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["key"])
                writer.writeheader()
                writer.writerows(rows)
        else:
            raise DataError(f"unknown export format {fmt!r}; use csv or json")
        return len(rows)
