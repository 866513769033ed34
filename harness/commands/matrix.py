"""`lab matrix NAME`: every cell of a named matrix from lab.yaml (the nightly run).

`--list` prints the cells instead of running them: the one list both CI pipelines fan
out from (a GitLab child pipeline, a GitHub job matrix), so a CI never re-derives cells.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from harness import interrupt, matrix, matrix_grid, nightly
from harness.commands import run as run_command
from harness.config import LabConfig
from harness.paths import REPO_ROOT


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "matrix",
        help="run every cell (kernel x config x target) of a named matrix",
        description=(
            "Run each cell of matrix.NAME in lab.yaml as its own `lab run`, sharing builds "
            "through the build cache, record each in results/history.sqlite, and write "
            "matrix.json, matrix.md and matrix.html beside the cells' run folders: "
            "night-over-night regressions, flaky tests with their pass rate, each cell's "
            "last nights as a strip. The exit code is the worst cell's (3, then 2, then 1). With "
            "--list, print the cells (one entry each, with the build they share) instead."
        ),
    )
    parser.add_argument("name", help="a matrix name from lab.yaml (e.g. nightly)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="run each cell N times and report a pass rate"
    )
    parser.add_argument(
        "--results", type=Path, default=REPO_ROOT / "results", help="where the matrix folder goes"
    )
    run_command.add_ab_argument(
        parser,
        "judge every other cell against BASE's run of the same config and target "
        "(a lab.yaml kernel; alone: each kernel's own git base: commit); BASE's own test "
        "failures count as pre-existing",
    )
    parser.add_argument(
        "--nights",
        type=int,
        default=nightly.DEFAULT_NIGHTS,
        metavar="N",
        help=f"how many runs of each cell the index draws (default {nightly.DEFAULT_NIGHTS})",
    )
    parser.add_argument("--list", action="store_true", help="print the cells, run nothing")
    parser.add_argument(
        "--format",
        choices=["text", "json", "github-output"],
        default="text",
        help="with --list: a table, a JSON list (one object per cell), or the `cells=` "
        "and `builds=` lines of a GitHub Actions step output",
    )
    parser.add_argument(
        "--kernel",
        help="this kernel (a lab.yaml name or a tree's path, e.g. the CI's checkout) "
        "instead of the matrix's kernels",
    )
    parser.add_argument(
        "--kernel-label", help="with --kernel: the name cells carry (default: the folder's name)"
    )
    parser.set_defaults(func=run)


def listing(entries: list[matrix_grid.CellEntry], fmt: str) -> str:
    if fmt == "json":
        return json.dumps([e.to_json() for e in entries], indent=2)
    if fmt == "github-output":
        cells = json.dumps([e.to_json() for e in entries], separators=(",", ":"))
        builds = json.dumps(matrix_grid.builds_of(entries), separators=(",", ":"))
        return f"cells={cells}\nbuilds={builds}"
    rows = [("cell", "kernel", "config", "target", "build key")]
    rows += [(e.cell, e.kernel, e.config, e.target, e.build_key) for e in entries]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    n_builds = len(matrix_grid.builds_of(entries))
    suites = ", ".join(entries[0].suites) if entries else "none"
    return "\n".join([*lines, f"{len(entries)} cells, {n_builds} builds; suites: {suites}"])


def run(args: argparse.Namespace, lab: LabConfig) -> int:
    if args.list:
        entries = matrix_grid.cell_list(lab, args.name, args.kernel, args.kernel_label)
        print(listing(entries, args.format), flush=True)
        return 0
    # SIGTERM unwinds like Ctrl-C, as in `lab run`: the running cell stops its VM and
    # writes its report before the matrix exits.
    with interrupt.handlers():
        return matrix.run_matrix(
            lab,
            args.name,
            args.results.resolve(),
            repeat=args.repeat,
            ab_base=args.ab,
            nights=args.nights,
            kernel=args.kernel,
        )
