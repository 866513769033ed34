"""The run history: results/history.sqlite, the one module that opens it.

Every run folder's summary.json is the truth; the database is an index over them so
that runs can be compared, a cell's last nights listed and flakiness counted. It can
always be rebuilt with `lab history import results/`, so nothing depends on it
surviving: a corrupt or too-new file is reported with that remedy, never repaired.

sqlite3 from the standard library, no server. WAL mode lets readers (a report being
drawn) work while one writer records a run; writers take the lock up front (BEGIN
IMMEDIATE) and wait out a busy database for BUSY_TIMEOUT_S rather than failing.

This module holds the schema, its migrations and the connection; beside it,
history_record.py writes runs into it and history_query.py reads them back, and
history_mutate.py does both for `lab mutate`'s runs, all through Database's execute and
write, never through sqlite3 itself.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from harness.errors import InfraError, LabError, UserError
from harness.paths import REPO_ROOT

DB_NAME = "history.sqlite"
BUSY_TIMEOUT_S = 30.0
DEFAULT_RESULTS_ROOT = REPO_ROOT / "results"

REBUILD = "move it aside and rebuild it from the run folders: lab history import results/"


def default_path(results_root: Path = DEFAULT_RESULTS_ROOT) -> Path:
    return results_root / DB_NAME


# --- identity -----------------------------------------------------------------------


def identity(
    commit: str | None,
    dirty: bool,
    diff_sha256: str | None,
    config_hash: str | None,
    target: str | None,
) -> str | None:
    """What "the same kernel under the same conditions" means for the flaky rules.

    Same commit (plus the diff of a dirty tree), same final .config hash, same target.
    None when any part is unknown: a dirty tree without its diff hash could be any
    edit, and grouping unrelated edits would call a real regression flaky.
    """
    if not commit or not config_hash or not target:
        return None
    if dirty:
        if not diff_sha256:
            return None
        commit = f"{commit}+{diff_sha256}"
    return f"{commit}|{config_hash}|{target}"


# --- schema -------------------------------------------------------------------------

_V1 = """
CREATE TABLE runs (
    pk INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    run_id TEXT NOT NULL,
    folder TEXT NOT NULL,
    cell TEXT NOT NULL,
    kernel TEXT,
    config TEXT,
    commit_sha TEXT,
    describe TEXT,
    dirty INTEGER NOT NULL DEFAULT 0,
    diff_sha256 TEXT,
    mbox_sha256 TEXT,
    config_hash TEXT,
    target TEXT,
    accelerator TEXT,
    qemu_version TEXT,
    started TEXT NOT NULL,
    ended TEXT,
    wall_s REAL NOT NULL DEFAULT 0,
    verdict TEXT NOT NULL,
    exit_code INTEGER NOT NULL,
    complete INTEGER NOT NULL,
    summary_sha256 TEXT NOT NULL,
    environment TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX runs_cell ON runs (cell, started);
CREATE INDEX runs_run_id ON runs (run_id);
CREATE TABLE results (
    run_pk INTEGER NOT NULL REFERENCES runs (pk) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    suite TEXT NOT NULL,
    test TEXT NOT NULL,
    outcome TEXT NOT NULL,
    seconds REAL NOT NULL DEFAULT 0,
    reason TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_pk, seq)
);
CREATE INDEX results_test ON results (suite, test);
"""


def _v1(conn: sqlite3.Connection) -> None:
    # Statement by statement: executescript() would commit the migration's transaction
    # half way (Python 3.11 commits before running a script).
    for statement in _V1.split(";"):
        if statement.strip():
            conn.execute(statement)


def _v2(conn: sqlite3.Connection) -> None:
    # The flaky rules group runs by identity; storing it makes that an indexed lookup.
    # It is derived (identity() above), so existing rows are backfilled from their
    # columns. A step of its own so the upgrade path is real code the tests exercise.
    conn.execute("ALTER TABLE runs ADD COLUMN identity TEXT")
    conn.execute("CREATE INDEX runs_identity ON runs (identity, started)")
    rows = conn.execute(
        "SELECT pk, commit_sha, dirty, diff_sha256, config_hash, target FROM runs"
    ).fetchall()
    for pk, commit, dirty, diff, cfg, target in rows:
        ident = identity(commit, bool(dirty), diff, cfg, target)
        conn.execute("UPDATE runs SET identity = ? WHERE pk = ?", (ident, pk))


_V3 = """
CREATE TABLE mutation_runs (
    pk INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    folder TEXT NOT NULL,
    kernel TEXT,
    config TEXT,
    tree TEXT NOT NULL,
    files TEXT NOT NULL,
    suites TEXT NOT NULL,
    filters TEXT NOT NULL DEFAULT '{}',
    seed INTEGER NOT NULL,
    sample INTEGER,
    started TEXT NOT NULL,
    finished TEXT,
    updated TEXT NOT NULL,
    wall_s REAL NOT NULL DEFAULT 0,
    complete INTEGER NOT NULL,
    generated INTEGER NOT NULL DEFAULT 0,
    ran INTEGER NOT NULL DEFAULT 0,
    stillborn INTEGER NOT NULL DEFAULT 0,
    equivalent_tce INTEGER NOT NULL DEFAULT 0,
    duplicate INTEGER NOT NULL DEFAULT 0,
    notes_sha256 TEXT,
    argued_equivalent INTEGER NOT NULL DEFAULT 0,
    killed_by INTEGER NOT NULL DEFAULT 0,
    open_survivors INTEGER NOT NULL DEFAULT 0,
    source_sha256 TEXT NOT NULL
);
CREATE INDEX mutation_runs_kernel ON mutation_runs (kernel, started);
CREATE TABLE mutation_scores (
    run_pk INTEGER NOT NULL REFERENCES mutation_runs (pk) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    suite TEXT NOT NULL,
    killed INTEGER NOT NULL,
    survived INTEGER NOT NULL,
    unknown INTEGER NOT NULL,
    score REAL,
    ne_killed INTEGER NOT NULL,
    ne_survived INTEGER NOT NULL,
    ne_unknown INTEGER NOT NULL,
    ne_score REAL,
    PRIMARY KEY (run_pk, seq)
);
"""


def _v3(conn: sqlite3.Connection) -> None:
    # `lab mutate`'s runs (history_mutate.py): one row per mutation run folder (files,
    # suites and filters as JSON lists/objects) and its scores per suite, raw and over
    # the mutants its notes file does not argue equivalent (ne_*). A table of their
    # own: a mutation run has no test results, verdict or identity of a runs row.
    for statement in _V3.split(";"):
        if statement.strip():
            conn.execute(statement)


# Ordered: MIGRATIONS[i] takes a database from user_version i to i + 1. Append only;
# a released step is never edited, because databases already past it will not rerun it.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_v1, _v2, _v3)
SCHEMA_VERSION = len(MIGRATIONS)


# --- the database -------------------------------------------------------------------


class Database:
    """An open history database. Use `opened(path)`; it closes and maps errors."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE below), so
        # a writer takes the lock before reading what it will change.
        self._conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            self._conn.execute("PRAGMA foreign_keys = ON")
            # WAL cannot be switched on inside a transaction and is a no-op on
            # filesystems that cannot do it (the mode stays "delete"): correct, slower.
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._migrate()
        except BaseException:
            # Not a database, or too new: nothing will use this connection.
            self._conn.close()
            raise

    def close(self) -> None:
        self._conn.close()

    @property
    def version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def write(self) -> Iterator[None]:
        """One write transaction, the lock taken up front (BEGIN IMMEDIATE)."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> sqlite3.Cursor:
        """One SQL statement; errors surface through opened() as InfraError."""
        return self._conn.execute(sql, params)

    def upsert(
        self,
        table: str,
        columns: Mapping[str, Any],
        digest: str,
        children: tuple[str, str, Callable[[int], Iterable[Sequence[Any]]]],
    ) -> tuple[str, int]:
        """Insert or replace the row of `table` whose `key` is columns["key"] and its
        child rows: ("new" | "updated" | "unchanged", its pk). Unchanged when the stored
        `digest` column and folder already match; otherwise the rows of `children`
        (table, INSERT statement, rows for the pk) are replaced. The names are the lab's
        own; values go in as parameters.
        """
        child_table, insert, rows = children
        with self.write():
            old = self.execute(
                f"SELECT pk, {digest}, folder FROM {table} WHERE key = ?", (columns["key"],)
            ).fetchone()
            if old is not None and old[1] == columns[digest] and old[2] == columns["folder"]:
                return "unchanged", int(old[0])
            names = ", ".join(columns)
            marks = ", ".join(f":{n}" for n in columns)
            updates = ", ".join(f"{n} = excluded.{n}" for n in columns if n != "key")
            self.execute(
                f"INSERT INTO {table} ({names}) VALUES ({marks}) "
                f"ON CONFLICT (key) DO UPDATE SET {updates}",
                columns,
            )
            pk = int(
                self.execute(f"SELECT pk FROM {table} WHERE key = ?", (columns["key"],)).fetchone()[
                    0
                ]
            )
            self.execute(f"DELETE FROM {child_table} WHERE run_pk = ?", (pk,))
            self.executemany(insert, rows(pk))
        return ("new" if old is None else "updated"), pk

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> sqlite3.Cursor:
        return self._conn.executemany(sql, rows)

    def _migrate(self) -> None:
        if self.version == SCHEMA_VERSION:
            return
        with self.write():
            # Read again under the lock: another process may have just upgraded it.
            current = self.version
            if current > SCHEMA_VERSION:
                raise UserError(
                    f"{self.path} has history schema version {current}; this lab knows "
                    f"up to {SCHEMA_VERSION}",
                    f"update this checkout, or {REBUILD}",
                )
            for step in MIGRATIONS[current:]:
                step(self._conn)
            self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


@contextmanager
def opened(path: Path) -> Iterator[Database]:
    """Open (creating and upgrading as needed) the history database at path.

    sqlite errors become InfraError naming the file and the rebuild remedy, so no
    caller needs to know sqlite3 and no traceback reaches the user.
    """
    try:
        db = Database(path)
    except (sqlite3.Error, OSError) as exc:
        raise InfraError(f"cannot open the run history {path}: {exc}", REBUILD) from exc
    try:
        yield db
    except sqlite3.Error as exc:
        raise InfraError(f"the run history {path} failed: {exc}", REBUILD) from exc
    finally:
        db.close()


T = TypeVar("T")


def or_warn(
    what: str, run_dir: Path, warn: Callable[[str], None], record: Callable[[], T]
) -> T | None:
    """record(), where failing to update the history must not change a run's outcome:
    the history is an index that `lab history import` can rebuild, so a failure is a
    warning with that remedy. `what` names the run ("this run", "this mutation run")."""
    try:
        return record()
    except LabError as exc:
        warn(f"[history] warning: {what} is not in the history: {exc.message}")
    except Exception as exc:  # a history bug must not turn a finished run into a crash
        warn(
            f"[history] warning: {what} is not in the history ({type(exc).__name__}: "
            f"{exc}); add it later with `lab history import {run_dir}`"
        )
    return None
