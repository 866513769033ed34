"""The `lab` command: parse arguments, load lab.yaml, call one stage or the runner.

Each subcommand lives in harness/commands/<name>.py with a `register(subparsers)`
function that adds its parser and sets `func(args, lab) -> int`. Discovery keeps this
file from growing with every command.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from pathlib import Path

from harness import commands, config
from harness.errors import LabError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lab",
        description="gmemlab: build, boot and test kernels for guest_memfd in-place conversion",
    )
    parser.add_argument(
        "--lab", type=Path, default=None, metavar="FILE", help="the lab file (default: lab.yaml)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        lab = config.load(args.lab)
        code: int = args.func(args, lab)
        return code
    except LabError as exc:
        print(f"lab: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("lab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
