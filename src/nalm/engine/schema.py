"""The tables of the results database (:mod:`nalm.engine.store`) and their SQL.

Tables:
  runs(key, experiment, name, config, status, summary, seconds, created, finished)
      one row per configuration; ``config`` is the full resolved configuration as JSON, ``key`` its hash.
  seeds(key, seed, ..., metrics)   one row per configuration × seed with its final statistics: the engine's columns
      (success, solved_at, best_step, divergence, and the arithmetic benchmark's MSEs), and every other per-seed value
      an experiment reports in ``metrics`` (JSON).
  curves(key, seed, step, ..., metrics)   the evaluation curves, the same way.
  artifacts(key, name, data) JSON results that are not per seed (e.g. Figure 1's error against input).
  checkpoints(key, step, state)   the latest checkpoint of an unfinished run (deleted when it finishes).
  leases(key, owner, host, pid, heartbeat)   which process is training a run now (see :meth:`Store.acquire`).
  blocks(key, first_seed, seeds, status, step, checkpoint, records, artifacts, seconds, finished)   the seed blocks of
      a run that the Ray executor trains as separate tasks (:mod:`nalm.engine.executors`): a finished block's per-seed
      records and artifacts until the run's last block arrives, an unfinished one's latest checkpoint.
  failures(key, first_seed, seeds, name, error, failed)   the latest error of each block (or run) whose task raised;
      deleted when it succeeds.
"""

SCHEMA_VERSION = 2
#: SQLite's application_id of a nalm store (the header field at offset 68): b"nalm" as a big-endian integer.
APPLICATION_ID = int.from_bytes(b"nalm", "big")
#: A lease whose heartbeat is older than this is taken over (its owner is silent: dead, or on a lost machine).
LEASE_TIMEOUT = 120.0
SEED_COLUMNS = ("success", "solved_at", "sparsity_error", "diverged", "diverged_at", "best_step",
                "interpolation_mse", "extrapolation_mse", "interpolation_mse_init", "extrapolation_mse_init")
CURVE_COLUMNS = ("interpolation_mse", "extrapolation_mse", "sparsity_error")

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY, experiment TEXT NOT NULL, name TEXT NOT NULL, config TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'done')), summary TEXT, seconds REAL,
    created REAL NOT NULL, finished REAL);
CREATE TABLE IF NOT EXISTS seeds (
    key TEXT NOT NULL REFERENCES runs(key) ON DELETE CASCADE, seed INTEGER NOT NULL,
    success INTEGER, solved_at INTEGER, sparsity_error REAL, diverged INTEGER NOT NULL, diverged_at INTEGER,
    best_step INTEGER, interpolation_mse REAL, extrapolation_mse REAL, interpolation_mse_init REAL,
    extrapolation_mse_init REAL, metrics TEXT, PRIMARY KEY (key, seed));
CREATE TABLE IF NOT EXISTS curves (
    key TEXT NOT NULL REFERENCES runs(key) ON DELETE CASCADE, seed INTEGER NOT NULL, step INTEGER NOT NULL,
    interpolation_mse REAL, extrapolation_mse REAL, sparsity_error REAL, metrics TEXT, PRIMARY KEY (key, seed, step));
CREATE TABLE IF NOT EXISTS artifacts (
    key TEXT NOT NULL REFERENCES runs(key) ON DELETE CASCADE, name TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (key, name));
CREATE TABLE IF NOT EXISTS checkpoints (
    key TEXT PRIMARY KEY REFERENCES runs(key) ON DELETE CASCADE, step INTEGER NOT NULL, state BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS leases (
    key TEXT PRIMARY KEY, owner TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL, heartbeat REAL NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('schema_version', '{SCHEMA_VERSION}');
"""

#: Tables that older readers ignore (no schema version of their own): made with the schema, or added on a writable
#: open of a store that lacks them.
ADDITIVE = """
CREATE TABLE IF NOT EXISTS blocks (
    key TEXT NOT NULL REFERENCES runs(key) ON DELETE CASCADE, first_seed INTEGER NOT NULL, seeds INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'done')), step INTEGER, checkpoint BLOB, records TEXT,
    artifacts TEXT, seconds REAL NOT NULL DEFAULT 0, finished REAL, PRIMARY KEY (key, first_seed));
CREATE TABLE IF NOT EXISTS failures (
    key TEXT NOT NULL REFERENCES runs(key) ON DELETE CASCADE, first_seed INTEGER NOT NULL, seeds INTEGER NOT NULL,
    name TEXT NOT NULL, error TEXT NOT NULL, failed REAL NOT NULL, PRIMARY KEY (key, first_seed));
"""
#: The tables ``Store.merge`` copies for each finished run (in this order: runs first, for the foreign keys).
RUN_TABLES = ("runs", "seeds", "curves", "artifacts")

#: Schema 1 -> 2: per-seed and per-step values beyond the fixed columns (JSON), and run leases.
UPGRADE_1 = """
ALTER TABLE seeds ADD COLUMN metrics TEXT;
ALTER TABLE curves ADD COLUMN metrics TEXT;
CREATE TABLE IF NOT EXISTS leases (
    key TEXT PRIMARY KEY, owner TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL, heartbeat REAL NOT NULL);
UPDATE meta SET value = '2' WHERE name = 'schema_version';
"""
