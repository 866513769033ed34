"""Reading the run history: recorded runs as RunRows, their results, the outcomes
of one identity's runs (what the flaky rules count), and two recorded runs compared."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import compare
from harness.history import Database
from harness.results import SEVERITY, Outcome, TestResult

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
    cursor = db.execute(sql, tuple(params))
    names = [d[0] for d in cursor.description]
    rows = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    counts: dict[int, dict[str, int]] = {}
    if rows:
        marks = ", ".join("?" for _ in rows)
        for pk, outcome, n in db.execute(
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


def run_by_pk(db: Database, pk: int) -> RunRow:
    return _runs(db, "pk = ?", (pk,), "pk", None)[0]


def run_in_folder(db: Database, folder: Path) -> RunRow | None:
    """The run recorded from this run folder (the newest, if it was recorded twice)."""
    found = _runs(db, "folder = ?", (str(folder.resolve()),), "started DESC, pk DESC", 1)
    return found[0] if found else None


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
    return [c for (c,) in db.execute("SELECT DISTINCT cell FROM runs ORDER BY cell")]


def results_of(db: Database, run: RunRow) -> list[TestResult]:
    """The run's results in the order they were recorded (no excerpts: see its folder)."""
    return [
        TestResult(suite, test, Outcome(outcome), reason, seconds)
        for suite, test, outcome, seconds, reason in db.execute(
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
    for pk, suite, test, outcome in db.execute(
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


def compare_runs(db: Database, a: RunRow, b: RunRow) -> compare.Comparison:
    """Recorded run A (the reference) against run B, each judged with its identity's
    history (`lab compare`, and the nightly page's last two nights)."""
    return compare.compare(
        results_of(db, a),
        results_of(db, b),
        outcomes_by_identity(db, a.identity),
        outcomes_by_identity(db, b.identity),
        same_identity=a.identity is not None and a.identity == b.identity,
    )


def find_runs(db: Database, ref: str) -> list[RunRow]:
    """Runs named by ref: a key (run-id@started) or a run id (several when a matrix
    cell's run id recurs night after night)."""
    by_key = _runs(db, "key = ?", (ref,), "pk", None)
    return by_key or _runs(db, "run_id = ?", (ref,), "started, pk", None)


def display_ref(db: Database, run: RunRow) -> str:
    """The shortest name that resolves to this run: its id if unique, else its key."""
    n = db.execute("SELECT COUNT(*) FROM runs WHERE run_id = ?", (run.run_id,)).fetchone()
    return run.run_id if int(n[0]) == 1 else run.key
