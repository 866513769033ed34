"""`lab bisect`: the first commit that breaks a test, with git bisect run and the lab as
its script (harness/bisect.py; a step: harness/bisect_step.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness import bisect, bisect_step, interrupt, runner, selection
from harness.config import LabConfig
from harness.errors import UserError
from harness.paths import REPO_ROOT


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "bisect",
        help="find the commit that broke a test (git bisect run with the lab as the script)",
        description=(
            "Bisect GOOD..BAD of a git kernel (a checkout's path, or a lab.yaml git: or "
            "path: kernel) in a separate worktree (the checkout is never touched): at "
            "each commit git picks, build, boot and run the one suite or test. A commit "
            "that does not build, or a run with an infrastructure error, is skipped "
            "(exit 125); a passing test is good, a failing one bad. Prints the first bad "
            "commit; every step's run is kept in results/bisect-<kernel>-<time>/ and in "
            "the history. Exit 0 found, 2 skipped commits hide it or git could not "
            "decide, 3 bad input."
        ),
    )
    parser.add_argument("--kernel", required=True, help="a git checkout, or a lab.yaml kernel")
    parser.add_argument("--good", help="a commit where the test passes")
    parser.add_argument("--bad", help="a commit where it fails")
    parser.add_argument(
        "--test",
        required=True,
        metavar="SUITE[:TEST]",
        help="the suite to run, or one test of it: a pytest node id "
        "(gmem-ioctl:test_guest_memfd.py::test_file_size) or a kselftest name",
    )
    parser.add_argument("--config", help="a config set from lab.yaml (default: defaults.config)")
    parser.add_argument(
        "--worktree",
        type=Path,
        help="where the bisection's worktree goes (default: under the cache, kept for the "
        "next bisection of the repository to build incrementally)",
    )
    parser.add_argument(
        "--results", type=Path, default=REPO_ROOT / "results", help="the results root"
    )
    # Internal: one step, as git bisect run calls it in the worktree.
    parser.add_argument("--step", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--history", type=Path, help=argparse.SUPPRESS)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, lab: LabConfig) -> int:
    sel = selection.parse(args.test)
    config_name = args.config or lab.defaults.config
    # Ctrl-C and SIGTERM stop the step's run (its VM) and the bisection, as in `lab run`.
    with interrupt.handlers():
        if args.step:
            return bisect_step.step(
                lab,
                sel,
                Path(args.kernel),
                config_name,
                args.results.resolve(),
                (args.history or args.results).resolve(),
                runner.Progress(sys.stderr),
            )
        if not args.good or not args.bad:
            raise UserError("lab bisect needs --good and --bad", "e.g. --good v7.3 --bad HEAD")
        req = bisect.BisectRequest(
            kernel=args.kernel,
            good=args.good,
            bad=args.bad,
            test=sel,
            config=config_name,
            results_root=args.results.resolve(),
            worktree=args.worktree,
            lab_file=args.lab,
        )
        return bisect.run_bisect(lab, req, runner.Progress(sys.stderr))
