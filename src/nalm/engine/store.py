"""The results database: SQLite, written in transactions, the single source of every table and figure.

The tables are described in :mod:`nalm.engine.schema`.

A run writes its curve rows and its checkpoint in one transaction, so after a crash (even ``kill -9``) the store
holds a consistent prefix of the run, and running the same command again resumes from it.

The blocks and failures tables are additive: a schema-2 nalm that does not know them reads the file as before, so
they are created when a writable store lacks them, without a new schema version (which would make older nalm refuse
the file for nothing). ``Store.merge`` copies the finished runs of another store (``nalm merge``).

A file that is not a nalm store (another SQLite database, or anything else), a damaged one, or one written by a newer
nalm is refused with a :class:`DataError` naming it, and left untouched; a store of schema 1 is upgraded in place.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import torch

from nalm.errors import DataError

from .schema import (ADDITIVE, APPLICATION_ID, CURVE_COLUMNS, LEASE_TIMEOUT, RUN_TABLES, SCHEMA, SCHEMA_VERSION,
                     SEED_COLUMNS, UPGRADE_1)


def config_key(config: dict) -> str:
    """The hash of a resolved configuration (canonical JSON): equal configurations share one run."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:20]


def _nan_to_none(v):
    return None if isinstance(v, float) and v != v else v


def _split(record: dict, columns: tuple[str, ...], skip: tuple[str, ...]) -> tuple[list, str | None]:
    """A record's values for the fixed ``columns``, and every other value (except ``skip``) as JSON (None if none)."""
    extra = {k: _nan_to_none(v) for k, v in record.items() if k not in columns and k not in skip}
    return [_nan_to_none(record.get(c)) for c in columns], json.dumps(extra) if extra else None


def _merge(row: dict, metrics: str | None) -> dict:
    """A stored row back as one dict: the fixed columns that are set, then the JSON values."""
    return {**row, **(json.loads(metrics) if metrics else {})}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_OWNER: tuple[int, str] | None = None


def lease_owner() -> str:
    """This process's lease identity, "host:pid:token" (the token tells a reused pid from the process that held it)."""
    global _OWNER
    if _OWNER is None or _OWNER[0] != os.getpid():
        _OWNER = (os.getpid(), f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}")
    return _OWNER[1]


class Store:
    """A results database in one SQLite file (created with its folder when missing, unless ``readonly``)."""

    def __init__(self, path: str | Path, readonly: bool = False) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_file():
            raise DataError(f"results store {self.path} is not a file")
        existing = self.path.is_file() and self.path.stat().st_size > 0
        if readonly and not existing:
            raise DataError(f"results store {self.path} not found")
        if existing:
            with self.path.open("rb") as f:
                if f.read(16) != b"SQLite format 3\x00":
                    raise DataError(f"{self.path} is not a nalm results database (not an SQLite file); "
                                    f"it was left untouched: name another file with --store")
        if readonly:
            self.conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=60)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(self.path, timeout=60)
        try:
            fresh = not existing or self._check(readonly)
            if not readonly:
                self.conn.execute("PRAGMA foreign_keys = ON")
            if fresh and not readonly:
                self.conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                self.conn.execute("PRAGMA journal_mode = WAL")  # readers never block the writing workers
                with self.conn:  # one write transaction: another process sees no tables or all of them
                    self.conn.executescript("BEGIN IMMEDIATE;" + SCHEMA + ADDITIVE + "COMMIT;")
        except sqlite3.DatabaseError as e:
            self.conn.close()
            raise DataError(f"{self.path} is not a readable nalm results database ({e}); it was left untouched: "
                            f"name another file with --store, or restore it from a copy") from None
        except DataError:
            self.conn.close()
            raise

    def _check(self, readonly: bool) -> bool:
        """Refuse (untouched) a file that is not a nalm store, is damaged, or is newer than this code; upgrade an
        older schema in one transaction. True when the database is still empty (the schema is to be made)."""
        app_id = self.conn.execute("PRAGMA application_id").fetchone()[0]
        tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:  # an empty database (e.g. one another process is creating right now): made a store below
            return True
        if app_id != APPLICATION_ID and not (app_id == 0 and {"meta", "runs", "seeds"} <= tables):
            raise DataError(f"{self.path} is an SQLite database but not a nalm results store; it was left "
                            f"untouched: name another file with --store")
        problems = [r[0] for r in self.conn.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise DataError(f"{self.path} is damaged (SQLite reports: {'; '.join(problems[:3])}); it was left "
                            f"untouched: restore it from a copy, or name another file with --store")
        row = self.conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise DataError(f"{self.path} was written by a newer nalm (store schema {version}; this nalm reads up "
                            f"to {SCHEMA_VERSION}); it was left untouched: upgrade nalm to read it")
        if version < 1:
            raise DataError(f"{self.path} has no nalm schema version; it was left untouched")
        if version < SCHEMA_VERSION and not readonly:
            with self.conn:  # executescript commits first; the upgrade itself runs as one script
                self.conn.executescript("BEGIN IMMEDIATE;" + UPGRADE_1 + f"PRAGMA application_id = {APPLICATION_ID};"
                                        "COMMIT;")
        if not readonly and not {"blocks", "failures"} <= tables:
            with self.conn:
                self.conn.executescript("BEGIN IMMEDIATE;" + ADDITIVE + "COMMIT;")
        return False

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

    def save_checkpoint(self, key: str, step: int, state: dict, curve_rows: Iterable[dict]) -> None:
        """Write new curve rows ({"seed", "step", metric: value, ...}) and the checkpoint at ``step`` in one
        transaction; the lease this process holds on the run is renewed in it too."""
        buf = io.BytesIO()
        torch.save(state, buf)
        with self.conn:
            self._write_curves(key, curve_rows)
            self.conn.execute("INSERT OR REPLACE INTO checkpoints (key, step, state) VALUES (?, ?, ?)",
                              (key, step, buf.getvalue()))
            self.conn.execute("UPDATE leases SET heartbeat = ? WHERE key = ? AND owner = ?",
                              (time.time(), key, lease_owner()))

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
        """Store the final per-seed rows, summary and artifacts, drop the checkpoint and the lease: one transaction.

        The curves are already in: each checkpoint wrote those evaluated since the one before. The run's seed
        blocks and failures (Ray executor) go too: their records are now the run's seed rows.
        """
        rows = []
        for r in seed_rows:
            values, extra = _split(r, SEED_COLUMNS, ("seed",))
            rows.append((key, r["seed"], *values, extra))
        with self.conn:
            self.conn.execute("DELETE FROM blocks WHERE key = ?", (key,))
            self.conn.execute("DELETE FROM failures WHERE key = ?", (key,))
            self.conn.executemany(
                f"INSERT OR REPLACE INTO seeds (key, seed, {', '.join(SEED_COLUMNS)}, metrics) "
                f"VALUES (?, ?, {', '.join('?' * len(SEED_COLUMNS))}, ?)", rows)
            for name, data in (artifacts or {}).items():
                self.conn.execute("INSERT OR REPLACE INTO artifacts (key, name, data) VALUES (?, ?, ?)",
                                  (key, name, json.dumps(data)))
            self.conn.execute("UPDATE runs SET status = 'done', summary = ?, seconds = ?, finished = ? WHERE key = ?",
                              (json.dumps(summary), seconds, time.time(), key))
            self.conn.execute("DELETE FROM checkpoints WHERE key = ?", (key,))
            self.conn.execute("DELETE FROM leases WHERE key = ?", (key,))

    # -- leases: one trainer per run, across processes and machines -----------------------------------------------
    def acquire(self, key: str) -> dict | None:
        """Take the lease on run ``key`` for this process; None on success, else the live holder's row.

        A lease held by this process is renewed; one whose heartbeat is older than LEASE_TIMEOUT, or whose owner
        on this host has died, is taken over. The check and the write are one transaction (BEGIN IMMEDIATE), so two
        processes never both take it.
        """
        me, now = lease_owner(), time.time()
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            row = self.conn.execute("SELECT owner, host, pid, heartbeat FROM leases WHERE key = ?", (key,)).fetchone()
            if row is not None and row[0] != me:
                owner, host, pid, beat = row
                dead = host == socket.gethostname() and not _pid_alive(pid)
                if not dead and now - beat < LEASE_TIMEOUT:
                    return {"owner": owner, "host": host, "pid": pid, "age": now - beat}
            self.conn.execute("INSERT OR REPLACE INTO leases (key, owner, host, pid, heartbeat) VALUES (?, ?, ?, ?, ?)",
                              (key, me, socket.gethostname(), os.getpid(), now))
        return None

    def heartbeat(self, key: str) -> None:
        with self.conn:
            self.conn.execute("UPDATE leases SET heartbeat = ? WHERE key = ? AND owner = ?",
                              (time.time(), key, lease_owner()))

    def release(self, key: str) -> None:
        with self.conn:
            self.conn.execute("DELETE FROM leases WHERE key = ? AND owner = ?", (key, lease_owner()))

    def checkpoint_step(self, key: str) -> int | None:
        """The step of a run's latest checkpoint, without loading it."""
        row = self.conn.execute("SELECT step FROM checkpoints WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def _write_curves(self, key: str, curve_rows: Iterable[dict]) -> None:
        """Insert curve rows ({"seed", "step", metric: value, ...}) inside the caller's transaction."""
        rows = []
        for r in curve_rows:
            values, extra = _split(r, CURVE_COLUMNS, ("seed", "step"))
            rows.append((key, r["seed"], r["step"], *values, extra))
        self.conn.executemany(f"INSERT OR REPLACE INTO curves (key, seed, step, {', '.join(CURVE_COLUMNS)}, "
                              f"metrics) VALUES (?, ?, ?, {', '.join('?' * len(CURVE_COLUMNS))}, ?)", rows)

    # -- seed blocks: one run trained as several tasks (nalm.engine.executors) ------------------------------------------
    def blocks(self, key: str) -> list[dict]:
        """The blocks of run ``key`` the store knows, by first seed: first_seed, seeds, status ('running': it has a
        checkpoint at ``step``; 'done'), seconds (of training so far), finished."""
        rows = self.conn.execute("SELECT first_seed, seeds, status, step, seconds, finished FROM blocks WHERE key = ? "
                                 "ORDER BY first_seed", (key,))
        return [dict(zip(("first_seed", "seeds", "status", "step", "seconds", "finished"), r)) for r in rows]

    def block_checkpoint(self, key: str, first_seed: int) -> tuple[int, bytes] | None:
        """(step, serialised state) of an unfinished block's latest checkpoint, as the task returned it."""
        row = self.conn.execute("SELECT step, checkpoint FROM blocks WHERE key = ? AND first_seed = ? AND "
                                "status = 'running' AND checkpoint IS NOT NULL", (key, first_seed)).fetchone()
        return None if row is None else (row[0], bytes(row[1]))

    def block_results(self, key: str) -> list[dict]:
        """The finished blocks of run ``key``, by first seed: first_seed, seeds, records, artifacts, seconds."""
        rows = self.conn.execute("SELECT first_seed, seeds, records, artifacts, seconds FROM blocks WHERE key = ? AND "
                                 "status = 'done' ORDER BY first_seed", (key,))
        return [{"first_seed": f, "seeds": n, "records": json.loads(r), "artifacts": json.loads(a), "seconds": sec}
                for f, n, r, a, sec in rows]

    def save_block_checkpoint(self, key: str, first_seed: int, seeds: int, step: int, state: bytes,
                              curve_rows: Iterable[dict], seconds: float) -> None:
        """A block's task stopped at a checkpoint (its time slice ran out): its new curve rows and the checkpoint,
        with the seconds it trained, in one transaction."""
        with self.conn:
            self._write_curves(key, curve_rows)
            self.conn.execute("INSERT INTO blocks (key, first_seed, seeds, status, step, checkpoint, seconds) "
                              "VALUES (?, ?, ?, 'running', ?, ?, ?) ON CONFLICT (key, first_seed) DO UPDATE SET "
                              "seeds = excluded.seeds, status = 'running', step = excluded.step, "
                              "checkpoint = excluded.checkpoint, seconds = blocks.seconds + excluded.seconds",
                              (key, first_seed, seeds, step, state, seconds))

    def finish_block(self, key: str, first_seed: int, seeds: int, records: list[dict], artifacts: dict,
                     curve_rows: Iterable[dict], seconds: float) -> None:
        """A block's task finished: its curve rows, per-seed records and artifacts (JSON; NaN kept), and the seconds
        of its last slice added to those before, in one transaction; its failure, if any, is cleared."""
        with self.conn:
            self._write_curves(key, curve_rows)
            self.conn.execute("INSERT INTO blocks (key, first_seed, seeds, status, records, artifacts, seconds, "
                              "finished) VALUES (?, ?, ?, 'done', ?, ?, ?, ?) ON CONFLICT (key, first_seed) DO UPDATE "
                              "SET seeds = excluded.seeds, status = 'done', step = NULL, checkpoint = NULL, "
                              "records = excluded.records, artifacts = excluded.artifacts, "
                              "seconds = blocks.seconds + excluded.seconds, finished = excluded.finished",
                              (key, first_seed, seeds, json.dumps(records), json.dumps(artifacts), seconds,
                               time.time()))
            self.conn.execute("DELETE FROM failures WHERE key = ? AND first_seed = ?", (key, first_seed))

    def record_failure(self, key: str, first_seed: int, seeds: int, name: str, error: str) -> None:
        with self.conn:
            self.conn.execute("INSERT OR REPLACE INTO failures (key, first_seed, seeds, name, error, failed) "
                              "VALUES (?, ?, ?, ?, ?, ?)", (key, first_seed, seeds, name, error, time.time()))

    def failures(self) -> list[dict]:
        """The recorded failures (latest per block), oldest first: key, first_seed, seeds, name, error, failed."""
        rows = self.conn.execute("SELECT key, first_seed, seeds, name, error, failed FROM failures ORDER BY failed")
        return [dict(zip(("key", "first_seed", "seeds", "name", "error", "failed"), r)) for r in rows]

    # -- combining stores ----------------------------------------------------------------------------------------
    def merge(self, path: str | Path) -> tuple[int, int]:
        """Copy every finished run of the store at ``path`` (with its seed rows, curves and artifacts) that this
        store does not hold finished, in one transaction; returns (copied, already here). A run is its
        configuration's key, so a run in both stores is kept once (this store's copy); an unfinished copy of it
        here is replaced. Unfinished runs of ``path`` are not copied (their checkpoints belong to its trainer)."""
        if Path(path).resolve() == self.path.resolve():
            raise DataError(f"cannot merge {path} into itself")
        with Store(path, readonly=True) as src:
            mine = {k for (k,) in self.conn.execute("SELECT key FROM runs WHERE status = 'done'")}
            keys = [k for (k,) in src.conn.execute("SELECT key FROM runs WHERE status = 'done' ORDER BY created")]
            new = [k for k in keys if k not in mine]
            columns = {}
            for table in RUN_TABLES:  # the columns both files have (a schema-1 file lacks the metrics columns)
                ours = [r[1] for r in self.conn.execute(f"PRAGMA table_info({table})")]
                theirs = {r[1] for r in src.conn.execute(f"PRAGMA table_info({table})")}
                columns[table] = ", ".join(c for c in ours if c in theirs)
            with self.conn:
                for key in new:
                    self.conn.execute("DELETE FROM runs WHERE key = ?", (key,))  # an unfinished copy, and its rows
                    for table in RUN_TABLES:
                        cols = columns[table]
                        rows = src.conn.execute(f"SELECT {cols} FROM {table} WHERE key = ?", (key,)).fetchall()
                        if rows:
                            marks = ", ".join("?" * len(rows[0]))
                            self.conn.executemany(f"INSERT INTO {table} ({cols}) VALUES ({marks})", rows)
        return len(new), len(keys) - len(new)

    # -- reading -------------------------------------------------------------------------------------------------
    def runs(self, experiment: str | None = None, status: str | None = "done") -> list[dict]:
        sql, args = "SELECT key FROM runs WHERE 1=1", []
        if experiment is not None:
            sql, args = sql + " AND experiment = ?", args + [experiment]
        if status is not None:
            sql, args = sql + " AND status = ?", args + [status]
        return [self.run(k) for (k,) in self.conn.execute(sql + " ORDER BY created", args)]

    def seeds(self, key: str) -> list[dict]:
        """The per-seed rows of a run: the fixed columns, then the experiment's own values."""
        cols = ("seed",) + SEED_COLUMNS
        rows = self.conn.execute(f"SELECT {', '.join(cols)}, metrics FROM seeds WHERE key = ? ORDER BY seed", (key,))
        return [_merge(dict(zip(cols, r[:-1])), r[-1]) for r in rows]

    def curves(self, key: str) -> list[dict]:
        cols = ("seed", "step") + CURVE_COLUMNS
        rows = self.conn.execute(f"SELECT {', '.join(cols)}, metrics FROM curves WHERE key = ? ORDER BY seed, step",
                                 (key,))
        return [_merge(dict(zip(cols, r[:-1])), r[-1]) for r in rows]

    def artifact(self, key: str, name: str):
        row = self.conn.execute("SELECT data FROM artifacts WHERE key = ? AND name = ?", (key, name)).fetchone()
        return None if row is None else json.loads(row[0])

    def artifacts(self, key: str) -> dict:
        """Every artifact of a run, by name."""
        return {n: json.loads(d) for n, d in self.conn.execute("SELECT name, data FROM artifacts WHERE key = ?",
                                                                 (key,))}

    def export(self, path: str | Path, fmt: str | None = None, experiments: Iterable[str] | None = None) -> int:
        """Write one row per finished run × seed (config, summary and seed statistics) as CSV or JSON.

        ``experiments`` restricts the rows to those experiments. Columns are the union over all rows (an
        experiment's own per-seed values included); a value a row lacks is empty.
        """
        path = Path(path)
        fmt = fmt or path.suffix.lstrip(".")
        if fmt not in ("csv", "json"):
            raise DataError(f"unknown export format {fmt!r}; use csv or json")
        wanted = None if experiments is None else set(experiments)
        rows = []
        for run in self.runs():
            if wanted is not None and run["experiment"] not in wanted:
                continue
            for s in self.seeds(run["key"]):
                rows.append({"key": run["key"], "experiment": run["experiment"], "name": run["name"],
                             "config": json.dumps(run["config"], sort_keys=True), **s})
        if fmt == "json":
            path.write_text(json.dumps(rows, indent=1))
        else:
            fields = list(dict.fromkeys(k for r in rows for k in r)) or ["key"]
            with path.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=fields)
                writer.writeheader()
                writer.writerows(rows)
        return len(rows)
