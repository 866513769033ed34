"""`lab ci ...`: the steps of the CI pipelines (ci/) that are not a plain `lab` command."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness import ci, matrix_grid
from harness.config import LabConfig


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "ci",
        help="CI pipeline steps: child pipeline, builds as artifacts, retry, checkout info",
        description="Steps of the CI pipelines in ci/ (README.md, CI).",
    )
    sub = parser.add_subparsers(dest="step", metavar="STEP", required=True)

    child = sub.add_parser(
        "gitlab-child",
        help="the GitLab child pipeline of a matrix (build, cell and report jobs)",
        description=(
            "Print the child pipeline YAML for matrix.NAME: one build job per build key, "
            "one job per cell that needs its build's artifact, and a report job."
        ),
    )
    child.add_argument("name", help="a matrix name from lab.yaml")
    child.add_argument(
        "--checkout",
        action="store_true",
        help="test the pipeline's own checkout ($CI_PROJECT_DIR) instead of the matrix's kernels",
    )
    child.add_argument("--kernel-label", default="checkout", help="with --checkout: cells' name")
    child.set_defaults(func=run_gitlab_child)

    pack = sub.add_parser("pack-build", help="copy a build's run inputs into a job artifact")
    pack.add_argument("manifest", type=Path, help="the manifest.json `lab build` printed")
    pack.add_argument("dest", type=Path, help="the artifact folder (e.g. build/<build key>)")
    pack.set_defaults(func=run_pack)

    unpack = sub.add_parser(
        "unpack-build", help="check a packed build where it arrived; print its manifest"
    )
    unpack.add_argument("folder", type=Path, help="the packed build's folder")
    unpack.set_defaults(func=run_unpack)

    again = sub.add_parser(
        "retry",
        help="run a command; once more if it exits 2 (infrastructure)",
        description=(
            "Run CMD; if it exits 2, move --set-aside to retried/ beside it and run CMD "
            "again (--max times). Exit with CMD's last code. Under GitHub Actions the "
            "outcome is also an annotation."
        ),
    )
    again.add_argument("--max", type=int, default=1, help="retries after the first run")
    again.add_argument("--set-aside", type=Path, help="results folder of a failed attempt")
    again.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    again.set_defaults(func=run_retry)

    info = sub.add_parser(
        "checkout-info",
        help="the tree's commit and merge base with the target branch, as JSON",
    )
    info.add_argument("--kernel", type=Path, required=True, help="the kernel checkout")
    info.add_argument("--repository-url", default="")
    info.add_argument("--branch", default="")
    info.add_argument("--target-branch", default="", help="the branch the change goes into")
    info.add_argument("--merge-base", default="", help="known already (e.g. from the CI)")
    info.add_argument("-o", "--output", type=Path, required=True)
    info.set_defaults(func=run_checkout_info)


def run_gitlab_child(args: argparse.Namespace, lab: LabConfig) -> int:
    label = args.kernel_label if args.checkout else None
    kernel = ci.CHECKOUT if args.checkout else None
    entries = matrix_grid.cell_list(lab, args.name, kernel, label)
    child = ci.gitlab_child(entries, args.name, ci.cache_key(lab.root), label)
    sys.stdout.write(ci.dump_yaml(child))
    return 0


def run_pack(args: argparse.Namespace, lab: LabConfig) -> int:
    print(ci.pack_build(args.manifest, args.dest), flush=True)
    return 0


def run_unpack(args: argparse.Namespace, lab: LabConfig) -> int:
    print(ci.unpack_build(args.folder), flush=True)
    return 0


def run_retry(args: argparse.Namespace, lab: LabConfig) -> int:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    return ci.retry(cmd, max_retries=args.max, set_aside=args.set_aside)


def run_checkout_info(args: argparse.Namespace, lab: LabConfig) -> int:
    info = ci.checkout_info(
        args.kernel, args.repository_url, args.branch, args.target_branch, args.merge_base
    )
    args.output.write_text(json.dumps(info, indent=2) + "\n")
    print(f"lab ci: {json.dumps(info)}", file=sys.stderr)
    return 0
