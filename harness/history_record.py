"""Writing the run history: a run folder's summary.json becomes a runs row and its
results rows; importing walks folders for run folders (and `lab mutate`'s run folders,
recorded by history_mutate.py); a run named on a command line (a folder, a key or a run
id) is resolved here, recording a folder on the way.

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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import history_mutate
from harness.errors import UserError
from harness.history import Database, default_path, identity, opened, or_warn
from harness.history_query import RunRow, find_runs, run_by_pk
from harness.results import RunRecord, load_summary

_FIND_IDS = (
    "list the recorded runs with `lab history list` (add older run folders with "
    "`lab history import results/`), or pass a run folder instead of an id"
)


@dataclass(frozen=True)
class Recorded:
    run: RunRow
    # "new", "updated" (the summary changed since it was recorded) or "unchanged".
    status: str


@dataclass
class ImportReport:
    recorded: list[Recorded] = field(default_factory=list)
    mutations: list[history_mutate.MutationRecorded] = field(default_factory=list)
    # (folder, why) for summary.json files that could not be read.
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def count(self, status: str, mutations: bool = False) -> int:
        found = self.mutations if mutations else self.recorded
        return sum(r.status == status for r in found)


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
    status, pk = db.upsert(
        "runs",
        columns,
        "summary_sha256",
        (
            "results",
            "INSERT INTO results (run_pk, seq, suite, test, outcome, seconds, reason) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            lambda pk: [
                (pk, i, r.suite, r.name, r.outcome.value, r.seconds, r.reason)
                for i, r in enumerate(record.results)
            ],
        ),
    )
    return Recorded(run_by_pk(db, pk), status)


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
    return or_warn("this run", run_dir, warn, lambda: record(results_root, run_dir))


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


def _run_dirs(top: Path) -> Iterator[Path]:
    """Run folders (a summary.json) and mutation run folders below top (top included),
    in name order.

    A run folder holds no other runs, so the walk stops at the first summary.json; a
    mutation run's attempts/ hold the `lab run`s of its mutants, which are not runs of
    the kernel under test, so it stops there too. Symlinks (results/latest) are not
    followed, so no run is visited twice.
    """
    for here, dirs, files in os.walk(top):
        if "summary.json" in files or history_mutate.is_mutation_dir(Path(here)):
            dirs.clear()
            yield Path(here)
            continue
        dirs[:] = sorted(d for d in dirs if not (Path(here) / d).is_symlink())


def _summary_dirs(top: Path) -> Iterator[Path]:
    return (d for d in _run_dirs(top) if not history_mutate.is_mutation_dir(d))


def import_dirs(db: Database, dirs: Iterable[Path]) -> ImportReport:
    """Record every run found below the given folders (run folders, matrix folders,
    mutation run folders, results roots). A damaged summary.json or state.json is
    skipped with its reason, not fatal.

    Raises UserError for a folder that does not exist.
    """
    report = ImportReport()
    for top in dirs:
        if not top.is_dir():
            raise UserError(f"no such folder: {top}", "pass run folders or a results root")
        for run_dir in _run_dirs(top):
            try:
                if history_mutate.is_mutation_dir(run_dir):
                    report.mutations.append(history_mutate.record_mutation(db, run_dir))
                else:
                    report.recorded.append(record_run(db, run_dir))
            except UserError as exc:
                report.skipped.append((run_dir, exc.what))
    return report


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
