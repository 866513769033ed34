"""`lab matrix-report DIRS...`: one matrix report from cells that ran in separate jobs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness import matrix_grid, matrix_merge
from harness.config import LabConfig
from harness.errors import UserError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "matrix-report",
        help="merge cell run folders (from CI jobs) into one matrix report and verdict",
        description=(
            "Find the run folders (each with summary.json) in DIRS, and write matrix.json, "
            "matrix.md and one merged junit.xml into --out. A run under a folder named "
            "after a cell (results/<cell>/<run-id>) reports as that cell. With --expect "
            "(the JSON of `lab matrix NAME --list`), a cell with no run counts as missing. "
            "The exit code is the worst cell's (3, then 2, then 1), as for `lab matrix`."
        ),
    )
    parser.add_argument("dirs", nargs="+", type=Path, help="run folders, or folders holding them")
    parser.add_argument("--out", type=Path, default=Path("matrix-report"), help="output folder")
    parser.add_argument("--name", default="ci", help="the matrix's name in the report")
    parser.add_argument(
        "--expect", type=Path, help="the cells that should have run (`lab matrix --list` JSON)"
    )
    parser.set_defaults(func=run)


def expected_cells(path: Path) -> list[matrix_grid.CellEntry]:
    try:
        rows = json.loads(path.read_text())
        return [
            matrix_grid.CellEntry(**{**row, "suites": tuple(row.get("suites", ()))}) for row in rows
        ]
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(
            f"--expect {path}: not the JSON of `lab matrix --list` ({exc})",
            "write it with `lab matrix NAME --list --format json`",
        ) from None


def run(args: argparse.Namespace, lab: LabConfig) -> int:
    expected = expected_cells(args.expect) if args.expect else None
    code = matrix_merge.merge_report(args.dirs, args.out, args.name, expected)
    print((args.out / "matrix.md").read_text(), end="", flush=True)
    print(f"lab: matrix report in {args.out} (exit {code})", file=sys.stderr)
    return code
