"""The nightly matrix: kernels x configs x targets, each cell one `lab run`.

Builds are shared between cells for free: the build stage caches by (source commit,
config hash), so two cells on the same kernel and config compile once. Each cell
writes its own run folder under the matrix folder; the matrix adds an index
(matrix.json, matrix.md) with every cell's verdict, its report, and, with --repeat,
a pass rate, because flakiness is a rate over repeated runs, not one verdict.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from harness import junit, names, runner
from harness.config import LabConfig
from harness.errors import UserError
from harness.results import EXIT_INFRA, EXIT_USER, RunRecord, load_summary, verdict_text

# Exit code precedence across cells: bad input first (nothing meaningful ran), then
# infrastructure trouble (results are missing), then test failures.
_PRECEDENCE = (EXIT_USER, 2, 1, 0)


@dataclass(frozen=True)
class Cell:
    kernel: str
    config: str
    target: str

    @property
    def name(self) -> str:
        return f"{self.kernel}-{self.config}-{self.target}"


@dataclass(frozen=True)
class CellRun:
    cell: str
    attempt: int
    exit_code: int
    verdict: str
    folder: str


def cells(lab: LabConfig, matrix: str) -> tuple[list[Cell], tuple[str, ...]]:
    """The cells of a named matrix and the suites they run. Every cell of the grid runs:
    a host cell whose config needs what the host lacks skips its suites with the host
    probe's reason (harness/run_host.py), it is never left out silently."""
    if matrix not in lab.matrix:
        known = ", ".join(sorted(lab.matrix)) or "none"
        raise UserError(f"unknown matrix {matrix!r} (known: {known})", "name one from matrix:")
    spec = lab.matrix[matrix]
    grid = itertools.product(spec.kernels, spec.configs, spec.targets)
    suites = tuple(spec.suites or lab.defaults.suites)
    return [Cell(k, c, t) for k, c, t in grid], suites


@dataclass(frozen=True)
class CellEntry:
    """One row of `lab matrix NAME --list`: everything a CI job needs to run one cell.

    Cells with the same build_key (same kernel and config) share one build: a CI builds
    once per key and hands the build to each of its cells (`lab run --manifest`).
    """

    cell: str
    kernel: str
    config: str
    target: str
    build_key: str
    suites: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "suites": list(self.suites)}


def build_key(kernel_label: str, config: str) -> str:
    return names.slug(f"{kernel_label}-{config}")


def kernel_label(lab: LabConfig, kernel: str) -> str:
    """A lab.yaml kernel name as it is; a path by its folder's name (cell names read well)."""
    if kernel in lab.kernels:
        return kernel
    return names.slug(Path(kernel).name or kernel)


def cell_list(
    lab: LabConfig, matrix: str, kernel: str | None = None, label: str | None = None
) -> list[CellEntry]:
    """The cells of matrix.NAME, one entry each; with `kernel` (e.g. the CI's checkout),
    that one kernel replaces the matrix's kernels (configs x targets stay)."""
    grid, suites = cells(lab, matrix)
    if label is not None and not names.is_safe_name(label):
        raise UserError(
            f"--kernel-label {label!r}: not a safe name", "use letters, digits, '.', '_', '-'"
        )
    if kernel is None:
        pairs = [(c, c.kernel) for c in grid]
    else:
        name = label or kernel_label(lab, kernel)
        seen = dict.fromkeys((c.config, c.target) for c in grid)
        pairs = [(Cell(name, cfg, tgt), kernel) for cfg, tgt in seen]
    return [
        CellEntry(c.name, k, c.config, c.target, build_key(c.kernel, c.config), suites)
        for c, k in pairs
    ]


def builds_of(entries: list[CellEntry]) -> list[dict[str, str]]:
    """One entry per distinct build (kernel, config), in first-seen order."""
    out: dict[str, dict[str, str]] = {}
    for e in entries:
        entry = {"build_key": e.build_key, "kernel": e.kernel, "config": e.config}
        out.setdefault(e.build_key, entry)
    return list(out.values())


def combined_exit(codes: list[int]) -> int:
    for code in _PRECEDENCE:
        if code in codes:
            return code
    return max(codes, default=0)


RunCell = Callable[[LabConfig, runner.RunRequest], int]


def run_matrix(
    lab: LabConfig,
    matrix: str,
    results_root: Path,
    repeat: int = 1,
    run_cell: RunCell | None = None,
) -> int:
    """Run every cell (repeat times), write the index as cells finish, return the exit."""
    if repeat < 1:
        raise UserError(f"--repeat {repeat}: must be at least 1", "pass --repeat 1 or more")
    grid, suites = cells(lab, matrix)
    run_one = run_cell or (lambda lab_, req: runner.run(lab_, req))
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = results_root / f"matrix-{matrix}-{stamp}"
    folder.mkdir(parents=True, exist_ok=True)
    done: list[CellRun] = []
    for cell, attempt in itertools.product(grid, range(1, repeat + 1)):
        run_id = cell.name if repeat == 1 else f"{cell.name}-{attempt}"
        request = runner.RunRequest(
            kernel=cell.kernel,
            config=cell.config,
            suites=suites,
            results_root=folder,
            run_id=run_id,
            target=cell.target,
        )
        code = run_one(lab, request)
        done.append(CellRun(cell.name, attempt, code, _verdict(folder / run_id, code), run_id))
        write_index(folder, matrix, done)
    return combined_exit([r.exit_code for r in done])


def _verdict(run_folder: Path, code: int) -> str:
    try:
        summary = json.loads((run_folder / "summary.json").read_text())
        return str(summary["verdict"])
    except (OSError, ValueError, KeyError):
        return f"no summary (exit {code})"


def write_index(folder: Path, matrix: str, done: list[CellRun]) -> None:
    """matrix.json and matrix.md: one row per cell with its pass rate over attempts."""
    rates: dict[str, list[int]] = {}
    for r in done:
        rates.setdefault(r.cell, []).append(r.exit_code)
    pass_rate = {c: sum(x == 0 for x in codes) / len(codes) for c, codes in rates.items()}
    code = combined_exit([r.exit_code for r in done])
    index = {
        "matrix": matrix,
        "exit_code": code,
        "runs": [asdict(r) for r in done],
        "pass_rate": pass_rate,
    }
    (folder / "matrix.json").write_text(json.dumps(index, indent=2) + "\n")
    lines = [
        f"# gmemlab matrix {matrix}",
        "",
        f"verdict: **{verdict_text(code, True)}** (exit {code})",
        "",
        "| cell | attempt | verdict | exit | report |",
        "|---|---|---|---|---|",
    ]
    for r in done:
        report = f"{r.folder}/report.md" if r.folder != "-" else "none"
        lines.append(f"| {r.cell} | {r.attempt} | {r.verdict} | {r.exit_code} | {report} |")
    lines += ["", "| cell | pass rate |", "|---|---|"]
    lines += [f"| {c} | {rate:.0%} |" for c, rate in pass_rate.items()]
    (folder / "matrix.md").write_text("\n".join(lines) + "\n")


# --- merging cells that ran elsewhere (CI jobs) ----------------------------------------


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
