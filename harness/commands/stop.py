"""`lab stop`: end the VM that `lab boot --detach` left running."""

from __future__ import annotations

import argparse
import sys

from harness.config import LabConfig
from harness.qemu import detached


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "stop",
        help="stop the running lab VM (QMP quit, then kill)",
        description="Stop the VM left running by `lab boot --detach`.",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, lab: LabConfig) -> int:
    state = detached.load_state()
    if state is None:
        print("lab: no lab VM is running", file=sys.stderr)
        return 0
    detached.stop_detached(state)
    print(f"lab: stopped the lab VM (pid {state.pid}); its files: {state.run_dir}")
    return 0
