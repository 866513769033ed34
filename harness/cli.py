"""The `lab` command: parse arguments, load lab.yaml, call one stage or the runner.

Each subcommand lives in harness/commands/<name>.py with a `register(subparsers)`
function that adds its parser and sets `func(args, lab) -> int`. Discovery keeps this
file from growing with every command.

Whatever goes wrong, the process ends with one line of what happened, the next step and
an exit code from DESIGN.md (3 the input is wrong, 2 the infrastructure failed): never
with a Python traceback, and never with 1, which means a test failed.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from harness import commands, config
from harness.errors import InfraError, LabError, UserError, os_error
from harness.paths import cache_root

INTERRUPTED_EXIT = 130
# Set to 1 to let an unexpected exception end the process with its traceback.
DEBUG_ENV = "LAB_DEBUG"


class _Parser(argparse.ArgumentParser):
    """argparse with a bad argument mapped to exit 3 (the user's input is wrong).

    argparse's own code is 2, which the lab uses for infrastructure errors; subparsers
    are built from this class too (argparse uses the parent's class).
    """

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(
            UserError.exit_code,
            f"{self.prog}: error: {message}\n  -> see `{self.prog} --help`\n",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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


def _save_traceback() -> str:
    """Write the current exception's traceback to the cache; where it went (or stderr)."""
    text = traceback.format_exc()
    try:
        folder = cache_root() / "errors"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
        path.write_text(text)
        return str(path)
    except OSError:
        # Nowhere to keep it (a full disk, often the very failure): show it after all.
        print(text, file=sys.stderr, end="")
        return "above"


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
        return INTERRUPTED_EXIT
    except OSError as exc:
        err = os_error(exc)
        print(f"lab: {err.message}", file=sys.stderr)
        return err.exit_code
    except Exception as exc:
        # A bug in the lab, not an expected failure: one line here, the traceback in a
        # file, and exit 2 (the machinery failed), never 1 (which means a test failed).
        if type(exc).__name__ == "Interrupted":
            # runner.Interrupted (SIGTERM) outside the runner's own handling: as Ctrl-C.
            # Matched by name so this file does not depend on the runner's layout.
            print("lab: interrupted", file=sys.stderr)
            return INTERRUPTED_EXIT
        if os.environ.get(DEBUG_ENV) == "1":
            raise
        where = _save_traceback()
        print(
            f"lab: internal error: {type(exc).__name__}: {exc}\n"
            f"  -> a bug in the lab; the traceback is in {where} (set {DEBUG_ENV}=1 to "
            "print it); please report it",
            file=sys.stderr,
        )
        return InfraError.exit_code


if __name__ == "__main__":
    sys.exit(main())
