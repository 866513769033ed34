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
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from harness import runner
from harness.config import LabConfig
from harness.errors import UserError
from harness.results import EXIT_USER

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
    """The cells of a named matrix and the suites they run."""
    if matrix not in lab.matrix:
        known = ", ".join(sorted(lab.matrix)) or "none"
        raise UserError(f"unknown matrix {matrix!r} (known: {known})", "name one from matrix:")
    spec = lab.matrix[matrix]
    hosts = [t for t in spec.targets if t != "qemu"]
    if hosts:
        # Bare-metal cells need a host stage (deploy a kernel with kexec, run over the
        # user's SSH config) that the lab does not have yet: refuse rather than skip.
        raise UserError(
            f"matrix.{matrix}.targets: bare-metal targets {', '.join(hosts)} cannot run yet "
            "(the lab has no host deploy stage)",
            "use targets: [qemu] for now",
        )
    grid = itertools.product(spec.kernels, spec.configs, spec.targets)
    suites = tuple(spec.suites or lab.defaults.suites)
    return [Cell(k, c, t) for k, c, t in grid], suites


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
    index = {
        "matrix": matrix,
        "exit_code": combined_exit([r.exit_code for r in done]),
        "runs": [asdict(r) for r in done],
        "pass_rate": pass_rate,
    }
    (folder / "matrix.json").write_text(json.dumps(index, indent=2) + "\n")
    lines = [
        f"# gmemlab matrix {matrix}",
        "",
        "| cell | attempt | verdict | exit | report |",
        "|---|---|---|---|---|",
    ]
    for r in done:
        lines.append(
            f"| {r.cell} | {r.attempt} | {r.verdict} | {r.exit_code} | {r.folder}/report.md |"
        )
    lines += ["", "| cell | pass rate |", "|---|---|"]
    lines += [f"| {c} | {rate:.0%} |" for c, rate in pass_rate.items()]
    (folder / "matrix.md").write_text("\n".join(lines) + "\n")
