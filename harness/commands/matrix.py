"""`lab matrix NAME`: every cell of a named matrix from lab.yaml (the nightly run)."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

from harness import matrix
from harness.commands import run as run_command
from harness.config import LabConfig
from harness.paths import REPO_ROOT


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "matrix",
        help="run every cell (kernel x config x target) of a named matrix",
        description=(
            "Run each cell of matrix.NAME in lab.yaml as its own `lab run`, sharing builds "
            "through the build cache, and write matrix.json and matrix.md beside the cells' "
            "run folders. The exit code is the worst cell's (3, then 2, then 1)."
        ),
    )
    parser.add_argument("name", help="a matrix name from lab.yaml (e.g. nightly)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="run each cell N times and report a pass rate"
    )
    parser.add_argument(
        "--results", type=Path, default=REPO_ROOT / "results", help="where the matrix folder goes"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, lab: LabConfig) -> int:
    # SIGTERM unwinds like Ctrl-C, as in `lab run`: the running cell stops its VM and
    # writes its report before the matrix exits.
    previous = signal.signal(signal.SIGTERM, run_command.on_sigterm)
    try:
        return matrix.run_matrix(lab, args.name, args.results.resolve(), repeat=args.repeat)
    finally:
        signal.signal(signal.SIGTERM, previous)
