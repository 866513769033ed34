"""`lab history import DIR...`, `lab history list` and `lab history mutations`: the run
history's doors.

The history (results/history.sqlite) is an index over run folders, so import is how
it is (re)built: from old results, a copied results folder, or after deleting it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness import history, history_mutate, history_query, history_record
from harness.config import LabConfig
from harness.errors import UserError
from harness.results import EXIT_INFRA, EXIT_OK


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--results",
        type=Path,
        default=history.DEFAULT_RESULTS_ROOT,
        help=f"the results root holding {history.DB_NAME} (default: ./results)",
    )
    return common


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "history",
        help="the run history: import run folders, list recorded runs",
        description=(
            f"The run history is results/{history.DB_NAME}, an index over run folders "
            "(their summary.json) that lab compare and the nightly page read. It can "
            "always be rebuilt with `lab history import results/`."
        ),
    )
    actions = parser.add_subparsers(dest="history_action", metavar="ACTION", required=True)
    imp = actions.add_parser(
        "import",
        parents=[_common()],
        help="record the runs found below folders",
        description=(
            "Record every run folder (summary.json) and mutation run folder (state.json, "
            "from lab mutate) found below the given folders: run folders, matrix folders, "
            "whole results roots. Importing a run twice keeps "
            "one copy. Exit 0, 2 when a summary.json could not be read, 3 for a folder "
            "that does not exist."
        ),
    )
    imp.add_argument("dirs", nargs="+", type=Path, metavar="DIR")
    imp.set_defaults(func=run_import)
    lst = actions.add_parser(
        "list",
        parents=[_common()],
        help="the newest recorded runs, with the ids lab compare takes",
        description="The newest recorded runs, newest first, with the ids lab compare takes.",
    )
    lst.add_argument("--cell", help="only this cell (e.g. series-lab-qemu)")
    lst.add_argument("--last", type=int, default=20, metavar="N", help="how many (default 20)")
    lst.set_defaults(func=run_list)
    mut = actions.add_parser(
        "mutations",
        parents=[_common()],
        help="lab mutate's scores per suite over time",
        description=(
            "The recorded mutation runs (lab mutate), oldest first: per suite the score "
            "(killed / (killed + survived)) and, where a notes file argued survivors "
            "equivalent, the score over the non-equivalent mutants."
        ),
    )
    mut.add_argument("--kernel", help="only this kernel's runs")
    mut.add_argument("--file", help="only runs that mutated this file (virt/kvm/guest_memfd.c)")
    mut.add_argument("--last", type=int, default=20, metavar="N", help="how many (default 20)")
    mut.set_defaults(func=run_mutations)


def run_import(args: argparse.Namespace, lab: LabConfig) -> int:
    db_path = history.default_path(args.results.resolve())
    with history.opened(db_path) as db:
        report = history_record.import_dirs(db, args.dirs)
    for folder, why in report.skipped:
        print(f"lab: skipped {folder}: {why}", file=sys.stderr)
    mutations = ""
    if report.mutations:
        mutations = (
            f"; {len(report.mutations)} mutation runs: {report.count('new', True)} new, "
            f"{report.count('updated', True)} updated, {report.count('unchanged', True)} unchanged"
        )
    print(
        f"{len(report.recorded)} runs in {db_path}: {report.count('new')} new, "
        f"{report.count('updated')} updated, {report.count('unchanged')} unchanged"
        + mutations
        + (f"; {len(report.skipped)} skipped" if report.skipped else "")
    )
    return EXIT_INFRA if report.skipped else EXIT_OK


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def run_list(args: argparse.Namespace, lab: LabConfig) -> int:
    if args.last < 1:
        raise UserError(f"--last {args.last}: must be at least 1", "pass --last 1 or more")
    db_path = history.default_path(args.results.resolve())
    with history.opened(db_path) as db:
        runs = history_query.last_runs(db, args.last, args.cell)
        if not runs:
            known = history_query.cells(db)
            if args.cell and known:
                raise UserError(
                    f"no runs of cell {args.cell!r} in {db_path}",
                    f"known cells: {', '.join(known)}",
                )
            print(
                f"no runs recorded in {db_path}; record existing run folders with "
                "`lab history import results/` (lab mutate's runs: `lab history mutations`)"
            )
            return EXIT_OK
        refs = [history_query.display_ref(db, r) for r in runs]
    print("| id | started | cell | source | config hash | verdict | pass | fail | skip | other |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for ref, r in zip(refs, runs, strict=True):
        n = r.counts
        other = sum(v for k, v in n.items() if k not in ("pass", "fail", "skip"))
        print(
            f"| {_cell(ref)} | {r.started} | {_cell(r.cell)} | {_cell(r.source)} | "
            f"{(r.config_hash or '')[:12]} | {r.verdict} | {n.get('pass', 0)} | "
            f"{n.get('fail', 0)} | {n.get('skip', 0)} | {other} |"
        )
    return EXIT_OK


def _score(sc: history_mutate.Score | None) -> str:
    """A suite's cell: the score and its counts; the non-equivalent score when it differs."""
    if sc is None:
        return ""
    text = f"{sc.percent} ({sc.killed}/{sc.killed + sc.survived})"
    if sc.ne_survived != sc.survived:
        text += f", non-eq. {sc.ne_percent}"
    return text


def run_mutations(args: argparse.Namespace, lab: LabConfig) -> int:
    if args.last < 1:
        raise UserError(f"--last {args.last}: must be at least 1", "pass --last 1 or more")
    db_path = history.default_path(args.results.resolve())
    with history.opened(db_path) as db:
        runs = history_mutate.mutation_runs(db, args.kernel, args.file, args.last)
        known = history_mutate.kernels(db)
    if not runs:
        if args.kernel or args.file:
            raise UserError(
                f"no mutation runs of {args.kernel or 'any kernel'}"
                + (f" mutating {args.file}" if args.file else "")
                + f" in {db_path}",
                f"kernels with mutation runs: {', '.join(known) or '(none)'}",
            )
        print(
            f"no mutation runs recorded in {db_path}; lab mutate records its runs, and "
            "`lab history import results/` adds existing run folders"
        )
        return EXIT_OK
    # One column per suite any of these runs scored, in first-seen order (ANY last).
    suites: list[str] = []
    for r in runs:
        suites += [s for s in r.scores if s not in suites and s != history_mutate.ANY]
    suites.append(history_mutate.ANY)
    print(
        "| run | started | kernel | files | seed/sample | ran | "
        + " | ".join(_cell(s) for s in suites)
        + " | survivors: equivalent, killed-by, open |"
    )
    print("|---|---|---|---|---|---:|" + "---|" * len(suites) + "---|")
    for r in runs:
        state = "" if r.complete else " (partial)"
        print(
            f"| {_cell(r.name)}{state} | {r.started} | {_cell(r.kernel or '?')} | "
            f"{_cell(', '.join(r.files))} | {r.seed}/{r.sample or 'all'} | {r.ran} | "
            + " | ".join(_score(r.scores.get(s)) for s in suites)
            + f" | {r.argued_equivalent}, {r.killed_by}, {r.open_survivors} |"
        )
    return EXIT_OK
