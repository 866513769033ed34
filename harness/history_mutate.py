"""`lab mutate`'s runs in the run history: mutation scores over time.

A mutation run folder (state.json beside pristine/, see harness/mutate/state.py) becomes
one mutation_runs row and a mutation_scores row per suite plus the "(any suite)" row:
killed, survived, unknown and the score, raw and over the non-equivalent mutants (the
ones the run's notes file does not argue equivalent). state.json is the truth for the
verdicts; scores.json, rewritten by every report, adds what the state does not hold:
the kernel and config names and which survivors the notes account for.

A run is keyed by its folder's name and start time: recording the same folder again (a
resumed run at its end, an import) updates its row, so the final numbers replace the
partial ones, and a copied results folder imported elsewhere keeps one row.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import UserError
from harness.history import Database, default_path, opened, or_warn

if TYPE_CHECKING:
    from harness.mutate.classify import SuiteScore

# harness/mutate/state.py's names, repeated so that recognising a run folder does not
# load the mutate package (and universalmutator) into every `lab run`.
STATE_FILE = "state.json"
PRISTINE_DIR = "pristine"
ANY = "(any suite)"  # classify.ANY: the scores' killed-by-some-suite row


def is_mutation_dir(path: Path) -> bool:
    return (path / STATE_FILE).is_file() and (path / PRISTINE_DIR).is_dir()


@dataclass(frozen=True)
class Score:
    """One suite's numbers in one mutation run: raw, and without the argued equivalents."""

    suite: str
    killed: int
    survived: int
    unknown: int
    ne_killed: int
    ne_survived: int
    ne_unknown: int

    @staticmethod
    def _percent(killed: int, survived: int) -> str:
        return f"{100 * killed / (killed + survived):.0f}%" if killed + survived else "n/a"

    @property
    def percent(self) -> str:
        return self._percent(self.killed, self.survived)

    @property
    def ne_percent(self) -> str:
        return self._percent(self.ne_killed, self.ne_survived)


@dataclass(frozen=True)
class MutationRow:
    """One recorded mutation run: the columns of mutation_runs and its scores."""

    pk: int
    key: str
    folder: str
    kernel: str | None
    config: str | None
    files: list[str]
    suites: list[str]
    seed: int
    sample: int | None
    started: str
    finished: str | None
    complete: bool
    ran: int
    argued_equivalent: int
    killed_by: int
    open_survivors: int
    scores: dict[str, Score] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return Path(self.folder).name


@dataclass(frozen=True)
class MutationRecorded:
    run: MutationRow
    status: str  # "new", "updated" or "unchanged", as history_record.Recorded


# --- recording ----------------------------------------------------------------------


def _ids(data: dict[str, Any], kind: str) -> list[str]:
    """scores.json's survivor ids of one kind (a damaged or older file: none)."""
    found = data.get("survivors")
    ids = found.get(kind) if isinstance(found, dict) else None
    return [i for i in ids if isinstance(i, str)] if isinstance(ids, list) else []


def _text(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) and value else None


def _columns(run_dir: Path) -> tuple[dict[str, Any], list[tuple[SuiteScore, SuiteScore]]]:
    """The mutation_runs row and the (raw, non-equivalent) scores of a run folder.

    Raises UserError when run_dir holds no readable mutation state."""
    # Here, not at the top: the mutate package loads universalmutator (see STATE_FILE).
    from harness.mutate import report, state
    from harness.mutate.notes import account
    from harness.mutate.state import Status

    path = run_dir / STATE_FILE
    try:
        raw = path.read_bytes()
        found = state.load(run_dir)
    except FileNotFoundError as exc:
        raise UserError(
            f"{run_dir} is not a mutation run folder (no {STATE_FILE})",
            "pass a results/mutate-*/ folder, or a folder holding them",
        ) from exc
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"{path} cannot be read: {exc}", "the run folder is damaged") from exc
    if found is None:  # removed between the two reads
        raise UserError(f"{run_dir} is not a mutation run folder (no {STATE_FILE})")
    extra = report.load_scores_json(run_dir)
    done = found.with_status(Status.DONE)
    equivalent = set(_ids(extra, "equivalent"))
    if "survivors" in extra:
        killed_by, open_ids = _ids(extra, "killed_by"), _ids(extra, "open")
    else:  # no report yet: nothing accounts for any survivor
        killed_by, open_ids = [], list(account(done, found.suites, None).open)
    raw_scores = report.scores(found)
    ne_scores = report.scores(found, equivalent)
    updated = dt.datetime.fromtimestamp(path.stat().st_mtime).isoformat(timespec="seconds")
    notes = extra.get("notes")
    scores_file = run_dir / report.SCORES_FILE
    source = raw + (scores_file.read_bytes() if scores_file.is_file() else b"")
    columns = {
        "key": f"{run_dir.name}@{found.created}",
        "folder": str(run_dir),
        "kernel": _text(extra, "kernel"),
        "config": _text(extra, "config"),
        "tree": found.tree,
        "files": json.dumps(sorted(found.files)),
        "suites": json.dumps(found.suites),
        "filters": json.dumps(found.filters, sort_keys=True, default=str),
        "seed": found.seed,
        "sample": found.sample,
        "started": found.created,
        "finished": updated if found.complete else None,
        "updated": updated,
        "wall_s": found.wall_s,
        "complete": int(found.complete),
        "generated": len(found.order),
        "ran": len(done),
        "stillborn": len(found.with_status(Status.STILLBORN)),
        "equivalent_tce": len(found.with_status(Status.EQUIVALENT)),
        "duplicate": len(found.with_status(Status.DUPLICATE)),
        "notes_sha256": _text(notes, "sha256") if isinstance(notes, dict) else None,
        "argued_equivalent": len(equivalent & {r.mutant.id for r in done}),
        "killed_by": len(killed_by),
        "open_survivors": len(open_ids),
        "source_sha256": hashlib.sha256(source).hexdigest(),
    }
    return columns, [(raw_scores[s], ne_scores[s]) for s in raw_scores]


def _counts(sc: SuiteScore) -> tuple[int, int, int, float | None]:
    return sc.killed, sc.survived, sc.unknown, sc.score


def record_mutation(db: Database, run_dir: Path) -> MutationRecorded:
    """Record the mutation run in run_dir; the same run again updates its one row."""
    run_dir = run_dir.resolve()
    columns, pairs = _columns(run_dir)
    status, pk = db.upsert(
        "mutation_runs",
        columns,
        "source_sha256",
        (
            "mutation_scores",
            "INSERT INTO mutation_scores (run_pk, seq, suite, killed, survived, unknown, "
            "score, ne_killed, ne_survived, ne_unknown, ne_score) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            lambda pk: [
                (pk, i, a.suite, a.killed, a.survived, a.unknown, a.score, *_counts(b))
                for i, (a, b) in enumerate(pairs)
            ],
        ),
    )
    return MutationRecorded(_rows(db, "pk = ?", (pk,), None)[0], status)


def record_or_warn(
    results_root: Path, run_dir: Path, warn: Callable[[str], None]
) -> MutationRecorded | None:
    """record_mutation into results_root's history at the end of `lab mutate`: the
    history is an index that can be rebuilt, so a failure is a warning with the remedy,
    never a changed exit code."""

    def record() -> MutationRecorded:
        with opened(default_path(results_root)) as db:
            return record_mutation(db, run_dir)

    return or_warn("this mutation run", run_dir, warn, record)


# --- reading ------------------------------------------------------------------------

_COLUMNS = (
    "pk, key, folder, kernel, config, files, suites, seed, sample, started, finished, "
    "complete, ran, argued_equivalent, killed_by, open_survivors"
)


def _rows(db: Database, where: str, params: tuple[Any, ...], last: int | None) -> list[MutationRow]:
    """Matching runs, oldest first (the newest `last` of them)."""
    sql = f"SELECT {_COLUMNS} FROM mutation_runs WHERE {where} ORDER BY started DESC, pk DESC"
    cursor = db.execute(sql, params)
    names = [d[0] for d in cursor.description]
    rows = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()][:last][::-1]
    out = []
    for r in rows:
        scores = {
            suite: Score(suite, *counts)
            for suite, *counts in db.execute(
                "SELECT suite, killed, survived, unknown, ne_killed, ne_survived, ne_unknown "
                "FROM mutation_scores WHERE run_pk = ? ORDER BY seq",
                (r["pk"],),
            )
        }
        fields = {**r, "files": json.loads(r["files"]), "suites": json.loads(r["suites"])}
        out.append(MutationRow(**{**fields, "complete": bool(r["complete"])}, scores=scores))
    return out


def mutation_runs(
    db: Database, kernel: str | None = None, file: str | None = None, last: int = 20
) -> list[MutationRow]:
    """The newest `last` mutation runs (of this kernel, mutating this file), oldest
    first: the order a score is read over time in."""
    where, params = ("kernel = ?", (kernel,)) if kernel else ("1", ())
    found = _rows(db, where, params, None)
    if file is not None:
        found = [r for r in found if file in r.files]
    return found[-last:]


def kernels(db: Database) -> list[str]:
    """The kernels with recorded mutation runs (for an error message's hint)."""
    return [
        k for (k,) in db.execute("SELECT DISTINCT kernel FROM mutation_runs ORDER BY kernel") if k
    ]
