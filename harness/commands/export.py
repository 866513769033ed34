"""`lab export kcidb RUN_DIR`: a run folder in a format other systems read."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from harness import kcidb
from harness.config import LabConfig


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write a run in another system's format (kcidb)",
        description="Write a run folder in another system's format.",
    )
    formats = parser.add_subparsers(dest="format", metavar="FORMAT", required=True)
    k = formats.add_parser(
        "kcidb",
        help="KCIDB JSON (checkout, build, tests), validated with kcidb-io",
        description=(
            "Write the run as KCIDB JSON: the checkout (commit, series Message-IDs where "
            "known), the build (config, status) and one test per result (path "
            "gmemlab.<suite>.<test>; PASS/FAIL/ERROR/MISS/SKIP). It is validated against "
            "the KCIDB schema before it is written. Submit it with kcidb-submit "
            "(README.md, KCIDB)."
        ),
    )
    k.add_argument("run_dir", type=Path, help="a run folder (results/<run-id>)")
    k.add_argument("--origin", default=kcidb.DEFAULT_ORIGIN, help="the KCIDB origin ([a-z0-9_]+)")
    k.add_argument(
        "--artifact-root", help="the URL the run folder is published under (for log URLs)"
    )
    k.add_argument(
        "--manifest", type=Path, help="the build's manifest.json (default: the one the run used)"
    )
    k.add_argument(
        "--checkout-info",
        type=Path,
        help="JSON from the CI: repository_url, branch, target_branch, merge_base",
    )
    k.add_argument("-o", "--output", type=Path, help="write here instead of standard output")
    parser.set_defaults(func=run)


def _info(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    return kcidb.read_json(path, "--checkout-info", "pass a JSON object (README.md, CI)")


def run(args: argparse.Namespace, lab: LabConfig) -> int:
    document = kcidb.export(
        args.run_dir,
        origin=args.origin,
        artifact_root=args.artifact_root,
        manifest=args.manifest,
        checkout_info=_info(args.checkout_info),
    )
    text = json.dumps(document, indent=2) + "\n"
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
        counts = f"{len(document['tests'])} tests, build {document['builds'][0]['status']}"
        print(f"lab: KCIDB JSON ({counts}) in {args.output}", file=sys.stderr)
    return 0
