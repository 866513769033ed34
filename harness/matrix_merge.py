"""Merging matrix cells that ran elsewhere (one CI job per cell) into one index and junit.xml."""

from __future__ import annotations

import os
from pathlib import Path

from harness import junit
from harness.errors import UserError
from harness.matrix_grid import CellEntry
from harness.matrix_index import CellRun, combined_exit, write_index
from harness.results import EXIT_INFRA, RunRecord, load_summary, verdict_text


def find_runs(dirs: list[Path]) -> list[Path]:
    """The run folders (with summary.json) given, or found under the folders given.

    Symbolic links (results/latest) are never followed, so a run is counted once.
    """
    found: dict[Path, None] = {}
    for top in dirs:
        if not top.is_dir():
            raise UserError(f"{top}: no such folder", "pass run folders or folders holding them")
        if (top / "summary.json").is_file():
            found[top.resolve()] = None
            continue
        for root, subdirs, files in os.walk(top):
            if "summary.json" in files:
                found[Path(root).resolve()] = None
                subdirs.clear()  # a run's own cell folders hold no runs
            else:
                subdirs.sort()
    return list(found)


def _load(run: Path) -> RunRecord:
    try:
        return load_summary(run)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise UserError(
            f"{run / 'summary.json'}: not a gmemlab summary ({exc})", "pass lab run folders"
        ) from None


def _cell_of(run: Path, record: RunRecord, expected: set[str]) -> str:
    """A CI puts each cell's runs under a folder named after the cell (results/<cell>/):
    that name wins, so a build shared under another kernel name still reports as its cell."""
    for parent in (run.parent, run.parent.parent):
        if parent.name in expected:
            return parent.name
    return record.cell


def merge_report(
    dirs: list[Path], out: Path, name: str, expected: list[CellEntry] | None = None
) -> int:
    """matrix.json, matrix.md and one junit.xml in `out` from cell run folders made
    elsewhere (one CI job per cell); expected cells without a run count as missing.
    Returns the matrix's exit code (the worst cell's)."""
    want = [e.cell for e in expected or []]
    runs = [(path, _load(path)) for path in find_runs(dirs)]
    runs.sort(key=lambda item: (_cell_of(item[0], item[1], set(want)), item[1].started))
    out.mkdir(parents=True, exist_ok=True)
    done: list[CellRun] = []
    junits: list[tuple[str, Path]] = []
    for path, record in runs:
        cell = _cell_of(path, record, set(want))
        attempt = 1 + sum(1 for r in done if r.cell == cell)
        folder = os.path.relpath(path, out.resolve())
        done.append(CellRun(cell, attempt, record.exit_code, record.verdict, folder))
        junits.append((cell, path / "junit.xml"))
    ran = {r.cell for r in done}
    missing = [c for c in want if c not in ran]
    for cell in missing:
        verdict = f"{verdict_text(EXIT_INFRA, True)}: no results (its job did not finish)"
        done.append(CellRun(cell, 1, EXIT_INFRA, verdict, "-"))
    write_index(out, name, done)
    junit.merge(junits, out / "junit.xml", name=f"gmemlab matrix {name}", missing=missing)
    return combined_exit([r.exit_code for r in done])
