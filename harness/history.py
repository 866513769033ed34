"""The run history: results/history.sqlite, the one module that opens it.

Every run folder's summary.json is the truth; the database is an index over them so
that runs can be compared, a cell's last nights listed and flakiness counted. It can
always be rebuilt with `lab history import results/`, so nothing depends on it
surviving: a corrupt or too-new file is reported with that remedy, never repaired.

sqlite3 from the standard library, no server. WAL mode lets readers (a report being
drawn) work while one writer records a run; writers take the lock up front (BEGIN
IMMEDIATE) and wait out a busy database for BUSY_TIMEOUT_S rather than failing.

A run is identified by (run id, start time): matrix cells are named after the cell, so
the same run id recurs every night, while one run's folder keeps its key wherever it
is imported from. Re-recording a run replaces its rows (a run recorded while it was
still going gets its final results), so importing twice keeps one copy.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import InfraError, LabError, UserError
from harness.paths import REPO_ROOT
from harness.results import SEVERITY, Outcome, RunRecord, TestResult, load_summary

DB_NAME = "history.sqlite"
BUSY_TIMEOUT_S = 30.0
DEFAULT_RESULTS_ROOT = REPO_ROOT / "results"

_REBUILD = "move it aside and rebuild it from the run folders: lab history import results/"
_FIND_IDS = (
    "list the recorded runs with `lab history list` (add older run folders with "
    "`lab history import results/`), or pass a run folder instead of an id"
)


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


# --- rows ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRow:
    """One recorded run: the columns of `runs`."""

    pk: int
    key: str
    run_id: str
    folder: str
    cell: str
    kernel: str | None
    config: str | None
    commit: str | None
    describe: str | None
    dirty: bool
    diff_sha256: str | None
    mbox_sha256: str | None
    config_hash: str | None
    target: str | None
    accelerator: str | None
    qemu_version: str | None
    started: str
    ended: str | None
    wall_s: float
    verdict: str
    exit_code: int
    complete: bool
    identity: str | None
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def source(self) -> str:
        """The source line a reader recognises: describe, else the short commit."""
        return self.describe or (self.commit or "")[:12] or "unknown source"


@dataclass(frozen=True)
class Recorded:
    run: RunRow
    # "new", "updated" (the summary changed since it was recorded) or "unchanged".
    status: str


@dataclass
class ImportReport:
    recorded: list[Recorded] = field(default_factory=list)
    # (folder, why) for summary.json files that could not be read.
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.recorded)


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


# Ordered: MIGRATIONS[i] takes a database from user_version i to i + 1. Append only;
# a released step is never edited, because databases already past it will not rerun it.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_v1, _v2)
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
    def _write(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _migrate(self) -> None:
        if self.version == SCHEMA_VERSION:
            return
        with self._write() as conn:
            # Read again under the lock: another process may have just upgraded it.
            current = self.version
            if current > SCHEMA_VERSION:
                raise UserError(
                    f"{self.path} has history schema version {current}; this lab knows "
                    f"up to {SCHEMA_VERSION}",
                    f"update this checkout, or {_REBUILD}",
                )
            for step in MIGRATIONS[current:]:
                step(conn)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


@contextmanager
def opened(path: Path) -> Iterator[Database]:
    """Open (creating and upgrading as needed) the history database at path.

    sqlite errors become InfraError naming the file and the rebuild remedy, so no
    caller needs to know sqlite3 and no traceback reaches the user.
    """
    try:
        db = Database(path)
    except (sqlite3.Error, OSError) as exc:
        raise InfraError(f"cannot open the run history {path}: {exc}", _REBUILD) from exc
    try:
        yield db
    except sqlite3.Error as exc:
        raise InfraError(f"the run history {path} failed: {exc}", _REBUILD) from exc
    finally:
        db.close()


# --- recording ----------------------------------------------------------------------


def _text(env: dict[str, Any], key: str) -> str | None:
    value = env.get(key)
    return None if value in (None, "") else str(value)


def _target(record: RunRecord, kernel: str | None, config: str | None) -> str | None:
    """The environment's target, else the end of the cell name (kernel-config-target)."""
    explicit = _text(record.environment, "target")
    if explicit:
        return explicit
    prefix = f"{kernel}-{config}-" if kernel and config else None
    if prefix and record.cell.startswith(prefix) and len(record.cell) > len(prefix):
        return record.cell[len(prefix) :]
    return None


def _ended(started: str, wall_s: float) -> str | None:
    try:
        start = dt.datetime.fromisoformat(started)
    except ValueError:
        return None
    return (start + dt.timedelta(seconds=wall_s)).isoformat(timespec="seconds")


def _run_columns(record: RunRecord, run_dir: Path, summary_sha: str) -> dict[str, Any]:
    """The runs row of a summary. Every environment key is optional: older runs and
    runs that stopped before the build stage lack most of them."""
    env = record.environment
    kernel, config = _text(env, "kernel"), _text(env, "config")
    describe = _text(env, "kernel_describe")
    # The runner records the describe with "-dirty" for an edited tree; an explicit
    # kernel_dirty (when the runner records it) wins.
    dirty_flag = env.get("kernel_dirty")
    dirty = (describe or "").endswith("-dirty") if dirty_flag is None else bool(dirty_flag)
    commit = _text(env, "kernel_commit")
    diff = _text(env, "kernel_diff_sha256")
    config_hash = _text(env, "config_hash")
    target = _target(record, kernel, config)
    return {
        "key": f"{record.run_id}@{record.started}",
        "run_id": record.run_id,
        "folder": str(run_dir),
        "cell": record.cell,
        "kernel": kernel,
        "config": config,
        "commit_sha": commit,
        "describe": describe,
        "dirty": int(dirty),
        "diff_sha256": diff,
        "mbox_sha256": _text(env, "mbox_sha256"),
        "config_hash": config_hash,
        "target": target,
        "accelerator": _text(env, "accelerator"),
        "qemu_version": _text(env, "qemu_version"),
        "started": record.started,
        "ended": _ended(record.started, record.wall_s),
        "wall_s": record.wall_s,
        "verdict": record.verdict,
        "exit_code": record.exit_code,
        "complete": int(record.complete),
        "summary_sha256": summary_sha,
        "environment": json.dumps(env, sort_keys=True, default=str),
        "identity": identity(commit, dirty, diff, config_hash, target),
    }


def record_run(db: Database, run_dir: Path) -> Recorded:
    """Record the run in run_dir (its summary.json); the same run again keeps one copy.

    Raises UserError when run_dir has no readable summary.json.
    """
    run_dir = run_dir.resolve()
    summary = run_dir / "summary.json"
    try:
        raw = summary.read_bytes()
        record = load_summary(run_dir)
    except FileNotFoundError as exc:
        raise UserError(
            f"{run_dir} is not a run folder (no summary.json)",
            "pass a results/<run-id>/ folder, or a folder holding them to lab history import",
        ) from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(
            f"{summary} cannot be read: {exc}", "the run folder is damaged; skip it"
        ) from exc
    columns = _run_columns(record, run_dir, hashlib.sha256(raw).hexdigest())
    conn = db._conn
    with db._write():
        old = conn.execute(
            "SELECT pk, summary_sha256, folder FROM runs WHERE key = ?", (columns["key"],)
        ).fetchone()
        if old is not None and old[1] == columns["summary_sha256"] and old[2] == str(run_dir):
            status = "unchanged"
            pk = int(old[0])
        else:
            status = "new" if old is None else "updated"
            names = ", ".join(columns)
            marks = ", ".join(f":{n}" for n in columns)
            updates = ", ".join(f"{n} = excluded.{n}" for n in columns if n != "key")
            conn.execute(
                f"INSERT INTO runs ({names}) VALUES ({marks}) "
                f"ON CONFLICT (key) DO UPDATE SET {updates}",
                columns,
            )
            pk = int(
                conn.execute("SELECT pk FROM runs WHERE key = ?", (columns["key"],)).fetchone()[0]
            )
            conn.execute("DELETE FROM results WHERE run_pk = ?", (pk,))
            conn.executemany(
                "INSERT INTO results (run_pk, seq, suite, test, outcome, seconds, reason) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (pk, i, r.suite, r.name, r.outcome.value, r.seconds, r.reason)
                    for i, r in enumerate(record.results)
                ],
            )
    return Recorded(_run_by_pk(db, pk), status)


def record(results_root: Path, run_dir: Path) -> Recorded:
    """Record one finished (or stopped) run into results_root's history: the runner's
    and the matrix's call after each run. Raises LabError only (InfraError, UserError).

    A matrix writes its cells under results/matrix-*/, but the history lives at the
    top results root: pass that root here, not the matrix folder.
    """
    with opened(default_path(results_root)) as db:
        return record_run(db, run_dir)


def record_or_warn(
    results_root: Path, run_dir: Path, warn: Callable[[str], None]
) -> Recorded | None:
    """record(), for the runner and the matrix right after a run's summary is written:
    the history is an index that can be rebuilt, so failing to update it is a warning
    (with the remedy) and never changes the run's exit code."""
    try:
        return record(results_root, run_dir)
    except LabError as exc:
        warn(f"[history] warning: this run is not in the history: {exc.message}")
    except Exception as exc:  # a history bug must not turn a test verdict into a crash
        warn(
            f"[history] warning: this run is not in the history ({type(exc).__name__}: "
            f"{exc}); add it later with `lab history import {run_dir}`"
        )
    return None


def build_identity(manifest: Path) -> dict[str, Any]:
    """The source identity a build's manifest.json records, as run environment keys:
    what makes two runs "the same kernel" for the flaky rules (commit plus the diff of
    a dirty tree) and what a reader needs to tell them apart (the mbox, the base).

    Every key is optional: a manifest that cannot be read (a build loaded by a test, a
    folder cleaned up meanwhile) gives what it can, never an error.
    """
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return {}
    source = data.get("source") if isinstance(data, dict) else None
    if not isinstance(source, dict):
        return {}
    env: dict[str, Any] = {"kernel_dirty": bool(source.get("dirty"))}
    for key, name in (
        ("diff_sha256", "kernel_diff_sha256"),
        ("kind", "kernel_source_kind"),
        ("base", "kernel_base"),
    ):
        if source.get(key):
            env[name] = source[key]
    mbox = source.get("mbox_sha256") or data.get("mbox_sha256")
    if not mbox and isinstance(source.get("mbox"), dict):
        mbox = source["mbox"].get("sha256")
    if mbox:
        env["mbox_sha256"] = str(mbox)
    return env


def _summary_dirs(top: Path) -> Iterator[Path]:
    """Folders holding a summary.json below top (top included), in name order.

    A run folder holds no other runs, so the walk stops at the first summary.json;
    symlinks (results/latest) are not followed, so no run is visited twice.
    """
    for here, dirs, files in os.walk(top):
        if "summary.json" in files:
            dirs.clear()
            yield Path(here)
            continue
        dirs[:] = sorted(d for d in dirs if not (Path(here) / d).is_symlink())


def import_dirs(db: Database, dirs: Iterable[Path]) -> ImportReport:
    """Record every run found below the given folders (run folders, matrix folders,
    results roots). A damaged summary.json is skipped with its reason, not fatal.

    Raises UserError for a folder that does not exist.
    """
    report = ImportReport()
    for top in dirs:
        if not top.is_dir():
            raise UserError(f"no such folder: {top}", "pass run folders or a results root")
        for run_dir in _summary_dirs(top):
            try:
                report.recorded.append(record_run(db, run_dir))
            except UserError as exc:
                report.skipped.append((run_dir, exc.what))
    return report


# --- queries ------------------------------------------------------------------------

# The runs columns a RunRow holds, named as its fields (the column is commit_sha because
# COMMIT is an SQL keyword).
_RUN_COLUMNS = (
    "pk, key, run_id, folder, cell, kernel, config, commit_sha AS [commit], describe, dirty, "
    "diff_sha256, mbox_sha256, config_hash, target, accelerator, qemu_version, started, "
    "ended, wall_s, verdict, exit_code, complete, identity"
)


def _runs(
    db: Database, where: str, params: Sequence[Any], order: str, limit: int | None
) -> list[RunRow]:
    sql = f"SELECT {_RUN_COLUMNS} FROM runs WHERE {where} ORDER BY {order}"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    cursor = db._conn.execute(sql, tuple(params))
    names = [d[0] for d in cursor.description]
    rows = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    counts: dict[int, dict[str, int]] = {}
    if rows:
        marks = ", ".join("?" for _ in rows)
        for pk, outcome, n in db._conn.execute(
            f"SELECT run_pk, outcome, COUNT(*) FROM results WHERE run_pk IN ({marks}) "
            "GROUP BY run_pk, outcome",
            [r["pk"] for r in rows],
        ):
            counts.setdefault(pk, {})[outcome] = n
    return [
        RunRow(
            **{**r, "dirty": bool(r["dirty"]), "complete": bool(r["complete"])},
            counts=counts.get(r["pk"], {}),
        )
        for r in rows
    ]


def _run_by_pk(db: Database, pk: int) -> RunRow:
    return _runs(db, "pk = ?", (pk,), "pk", None)[0]


def runs_for_cell(db: Database, cell: str, last: int | None = None) -> list[RunRow]:
    """The cell's runs oldest first (the order a strip of nights is drawn in), at most
    the `last` newest."""
    newest = _runs(db, "cell = ?", (cell,), "started DESC, pk DESC", last)
    return newest[::-1]


def last_runs(db: Database, n: int = 20, cell: str | None = None) -> list[RunRow]:
    """The n newest runs, newest first (what `lab history list` prints)."""
    if cell is None:
        return _runs(db, "1", (), "started DESC, pk DESC", n)
    return _runs(db, "cell = ?", (cell,), "started DESC, pk DESC", n)


def cells(db: Database) -> list[str]:
    return [c for (c,) in db._conn.execute("SELECT DISTINCT cell FROM runs ORDER BY cell")]


def results_of(db: Database, run: RunRow) -> list[TestResult]:
    """The run's results in the order they were recorded (no excerpts: see its folder)."""
    return [
        TestResult(suite, test, Outcome(outcome), reason, seconds)
        for suite, test, outcome, seconds, reason in db._conn.execute(
            "SELECT suite, test, outcome, seconds, reason FROM results WHERE run_pk = ? "
            "ORDER BY seq",
            (run.pk,),
        )
    ]


_RANK = {o.value: i for i, o in enumerate(SEVERITY)}


def outcomes_by_identity(db: Database, ident: str | None) -> dict[tuple[str, str], list[Outcome]]:
    """Per (suite, test), its outcome in each run of this identity, oldest run first.

    One outcome per run: the worst, when a run recorded the test twice. An unknown
    identity (None) has no history: nothing can be said to be the same kernel.
    """
    if ident is None:
        return {}
    worst: dict[tuple[int, str, str], str] = {}
    for pk, suite, test, outcome in db._conn.execute(
        "SELECT r.run_pk, r.suite, r.test, r.outcome FROM results r "
        "JOIN runs ON runs.pk = r.run_pk WHERE runs.identity = ? "
        "ORDER BY runs.started, runs.pk, r.seq",
        (ident,),
    ):
        slot = (pk, suite, test)
        if slot not in worst or _RANK[outcome] < _RANK[worst[slot]]:
            worst[slot] = outcome
    history: dict[tuple[str, str], list[Outcome]] = {}
    for (_, suite, test), outcome in worst.items():
        history.setdefault((suite, test), []).append(Outcome(outcome))
    return history


def run_in_folder(db: Database, folder: Path) -> RunRow | None:
    """The run recorded from this run folder (the newest, if it was recorded twice)."""
    found = _runs(db, "folder = ?", (str(folder.resolve()),), "started DESC, pk DESC", 1)
    return found[0] if found else None


def find_runs(db: Database, ref: str) -> list[RunRow]:
    """Runs named by ref: a key (run-id@started) or a run id (several when a matrix
    cell's run id recurs night after night)."""
    by_key = _runs(db, "key = ?", (ref,), "pk", None)
    return by_key or _runs(db, "run_id = ?", (ref,), "started, pk", None)


def resolve_run(db: Database, ref: str) -> RunRow:
    """A run from a command line: a run folder (recorded now, idempotently), a key or
    a unique run id. Raises UserError naming the problem and how to find ids."""
    path = Path(ref)
    if path.is_dir():
        if not (path / "summary.json").is_file():
            inside = [p.name for p in _summary_dirs(path) if p != path][:8]
            hint = f"name one of its runs: {', '.join(inside)}" if inside else _FIND_IDS
            raise UserError(f"{path} is not a run folder (no summary.json in it)", hint)
        return record_run(db, path).run
    found = find_runs(db, ref)
    if not found:
        raise UserError(f"unknown run {ref!r}: not a recorded run id, key or folder", _FIND_IDS)
    if len(found) > 1:
        keys = ", ".join(r.key for r in found[-5:])
        raise UserError(
            f"run id {ref!r} names {len(found)} runs (a matrix cell recurs every night)",
            f"pass a key instead, e.g. {keys}; or the run folder; or --cell {found[0].cell}",
        )
    return found[0]


def display_ref(db: Database, run: RunRow) -> str:
    """The shortest name that resolves to this run: its id if unique, else its key."""
    n = db._conn.execute("SELECT COUNT(*) FROM runs WHERE run_id = ?", (run.run_id,)).fetchone()
    return run.run_id if int(n[0]) == 1 else run.key
