"""`lab compare A B` / `lab compare --cell NAME --last 2`: what changed between two runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness import history, history_query, history_record, history_report
from harness.config import LabConfig
from harness.errors import UserError
from harness.names import slug


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="compare two runs test by test: regressions, fixes, flaky tests",
        description=(
            "Compare run A (the reference) with run B, test by test: regressions "
            "(passed or skipped in A, failed/crashed/errored/timed out/missing in B), "
            "fixes, pre-existing failures, flaky tests (with their pass rate over runs "
            "of the same commit, config and target), new and gone tests, skip changes. "
            "Prints Markdown and writes compare.md and compare.html. A and B are run ids "
            "(lab history list), keys (id@started) or run folders (recorded on the way). "
            "Exit 0 no regression, 1 a regression, 3 bad input."
        ),
    )
    parser.add_argument("runs", nargs="*", metavar="RUN", help="A and B: run ids or folders")
    parser.add_argument("--cell", help="compare this cell's newest run with an earlier one")
    parser.add_argument(
        "--last",
        type=int,
        default=None,
        metavar="N",
        help="with --cell: the newest run against the Nth newest (default 2: the previous)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=history.DEFAULT_RESULTS_ROOT,
        help=f"the results root holding {history.DB_NAME} (default: ./results)",
    )
    parser.add_argument(
        "--out", type=Path, help="where compare.md/html go (default: results/compare-A-B/)"
    )
    parser.set_defaults(func=run)


def _pick(
    db: history.Database, args: argparse.Namespace
) -> tuple[history_query.RunRow, history_query.RunRow]:
    if args.cell is None:
        if args.last is not None:
            raise UserError("--last goes with --cell", "lab compare --cell NAME --last 2")
        if len(args.runs) != 2:
            raise UserError(
                f"lab compare takes two runs (A B), got {len(args.runs)}",
                "lab compare A B, or lab compare --cell NAME --last 2",
            )
        return history_record.resolve_run(db, args.runs[0]), history_record.resolve_run(
            db, args.runs[1]
        )
    if args.runs:
        raise UserError("pass either two runs or --cell, not both", "lab compare --cell NAME")
    last = 2 if args.last is None else args.last
    if last < 2:
        raise UserError(f"--last {last}: a comparison needs 2 runs at least", "pass --last 2")
    runs = history_query.runs_for_cell(db, args.cell, last=last)
    if not runs:
        known = ", ".join(history_query.cells(db)) or "none recorded"
        raise UserError(f"no runs of cell {args.cell!r} in the history", f"known cells: {known}")
    if len(runs) < last:
        raise UserError(
            f"cell {args.cell!r} has {len(runs)} recorded run(s), --last {last} needs {last}",
            "lab history list --cell " + args.cell,
        )
    return runs[0], runs[-1]


def run(args: argparse.Namespace, lab: LabConfig) -> int:
    results_root = args.results.resolve()
    with history.opened(history.default_path(results_root)) as db:
        a, b = _pick(db, args)
        if a.pk == b.pk:
            raise UserError(f"A and B are the same run ({a.key})", "name two different runs")
        result = history_query.compare_runs(db, a, b)
        a_ref, b_ref = history_query.display_ref(db, a), history_query.display_ref(db, b)
    out = args.out or results_root / f"compare-{slug(a_ref)}-{slug(b_ref)}"
    try:
        md, html, text = history_report.write_compare(result, a, b, out, a_ref, b_ref)
    except OSError as exc:
        raise UserError(f"cannot write the comparison to {out}: {exc}", "pass --out DIR") from exc
    sys.stdout.write(text)
    print(f"lab: wrote {md} and {html}", file=sys.stderr)
    return result.exit_code
