"""The nightly matrix: kernels x configs x targets, each cell one `lab run`.

The cells and their --list entries come from harness/matrix_grid.py. Builds are shared
between cells for free: the build stage caches by (source commit, config hash), so two
cells on the same kernel and config compile once. Each cell writes its own run folder
under the matrix folder and is recorded in the results root's history; the matrix adds
an index (matrix.json, matrix.md, matrix.html: harness/matrix_index.py) that leads with
what changed since the previous night (regressions flagged, flaky tests with their pass
rate: harness/nightly.py), draws each cell's last nights as a strip with its test pass
rate over time, and lists every run with, under --repeat, a pass rate per cell. With
--ab BASE each other cell is also judged against BASE's run of the same config and
target (harness/ab.py). Cells run elsewhere (CI jobs) merge into one index with
harness/matrix_merge.py.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import sys
from collections.abc import Callable
from pathlib import Path

from harness import ab, interrupt, names, nightly, runner
from harness.config import LabConfig
from harness.errors import LabError, UserError
from harness.matrix_grid import Cell, cells
from harness.matrix_index import AbRow, CellRun, combined_exit, write_index
from harness.paths import new_folder
from harness.results import EXIT_INFRA

RunCell = Callable[[LabConfig, runner.RunRequest], int]


def _ordered(grid: list[Cell], base: str | None) -> list[Cell]:
    """With --ab BASE, BASE's own cells first: they are the other cells' base runs."""
    if not base:
        return grid
    return [c for c in grid if c.kernel == base] + [c for c in grid if c.kernel != base]


def run_matrix(
    lab: LabConfig,
    matrix: str,
    results_root: Path,
    repeat: int = 1,
    run_cell: RunCell | None = None,
    *,
    ab_base: str | None = None,
    nights: int = nightly.DEFAULT_NIGHTS,
    warn: Callable[[str], None] = lambda text: print(text, file=sys.stderr),
    kernel: str | None = None,
) -> int:
    """Run every cell (repeat times), write the index as cells finish, return the exit.

    Each run is recorded in results_root's history (the runner does it); the index
    draws each cell's last `nights` runs from there. With ab_base (a kernel, or "" for
    each kernel's own base: commit), every other cell is compared with the base kernel's
    run of the same config and target, and counts by that comparison (harness.ab).
    With `kernel` (a lab.yaml name or a tree's path) it replaces the matrix's kernels.
    """
    if repeat < 1:
        raise UserError(f"--repeat {repeat}: must be at least 1", "pass --repeat 1 or more")
    if nights < 1:
        raise UserError(f"--nights {nights}: must be at least 1", "pass --nights 1 or more")
    grid, suites = cells(lab, matrix)
    if kernel is not None:
        pairs = dict.fromkeys((c.config, c.target) for c in grid)
        grid = [Cell(kernel, cfg, tgt) for cfg, tgt in pairs]
    grid = _ordered(grid, ab_base)
    run_one = run_cell or (lambda lab_, req: runner.run(lab_, req))
    folder = new_folder(results_root, f"matrix-{matrix}-{dt.datetime.now():%Y%m%d-%H%M%S}")
    done: list[CellRun] = []
    ab_rows: list[AbRow] = []
    # (base kernel, config, target) -> (its run folder, its exit code), once per matrix.
    base_runs: dict[tuple[str, str, str], tuple[Path, int]] = {}
    counted: list[int] = []

    def request(kernel: str, config: str, target: str, run_id: str) -> runner.RunRequest:
        return runner.RunRequest(
            kernel=kernel,
            config=config,
            suites=suites,
            results_root=folder,
            run_id=run_id,
            target=target,
            history_root=results_root,
        )

    for cell, attempt in itertools.product(grid, range(1, repeat + 1)):
        run_id = cell.name if repeat == 1 else f"{cell.name}-{attempt}"
        code = run_one(lab, request(cell.kernel, cell.config, cell.target, run_id))
        done.append(CellRun(cell.name, attempt, code, _verdict(folder / run_id, code), run_id))
        if ab_base is None:
            counted.append(code)
        elif cell.kernel == ab_base:
            base_runs[(cell.kernel, cell.config, cell.target)] = (folder / run_id, code)
            # The base's own test failures are every series cell's pre-existing ones.
            counted.append(code if code != 1 else 0)
        else:
            base = ab.resolve_base(lab, cell.kernel, ab_base)
            key = (base.kernel, cell.config, cell.target)
            if key not in base_runs:
                interrupt.check()  # the cell was interrupted: no base run after it
                base_id = f"{names.slug(base.kernel)}-{cell.config}-{cell.target}-base"
                base_code = run_one(
                    base.lab, request(base.kernel, cell.config, cell.target, base_id)
                )
                base_runs[key] = (folder / base_id, base_code)
                counted.append(base_code if base_code != 1 else 0)
            base_dir, base_code = base_runs[key]
            v = ab.judge(results_root, base_dir, folder / run_id, base_code, code, base.label)
            if v is None:
                counted.append(max(code, base_code, EXIT_INFRA))
                ab_rows.append(
                    AbRow(run_id, base_dir.name, "no comparison: a run left no summary", EXIT_INFRA)
                )
            else:
                ab.write_ab(folder / run_id, base_dir, base.label, v)
                counted.append(v.exit_code)
                ab_rows.append(AbRow(run_id, base_dir.name, v.headline, v.exit_code))
        view = _nightly(results_root, done, folder, nights, warn)
        write_index(folder, matrix, done, view, ab_rows, exit_code=combined_exit(counted))
        # A cell's runner caught Ctrl-C or SIGTERM to write its report: stop here.
        interrupt.check()
    return combined_exit(counted)


def _nightly(
    results_root: Path,
    done: list[CellRun],
    folder: Path,
    nights: int,
    warn: Callable[[str], None],
) -> list[nightly.CellNight] | None:
    tonight: dict[str, list[Path]] = {}
    for r in done:
        tonight.setdefault(r.cell, []).append(folder / r.folder)
    try:
        return nightly.view(results_root, tonight, nights)
    except LabError as exc:
        warn(f"[matrix] warning: no nightly view from the history: {exc.message}")
        return None


def _verdict(run_folder: Path, code: int) -> str:
    try:
        summary = json.loads((run_folder / "summary.json").read_text())
        return str(summary["verdict"])
    except (OSError, ValueError, KeyError):
        return f"no summary (exit {code})"
