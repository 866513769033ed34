"""`lab ssh`: a shell (or `-- CMD`) on the VM that `lab boot --detach` left running."""

from __future__ import annotations

import argparse

from harness import session
from harness.config import LabConfig
from harness.errors import InfraError, UserError
from harness.qemu import detached


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "ssh",
        help="a shell or `-- CMD` on the running lab VM (see `lab boot --detach`)",
        description="Connect to the lab VM left running by `lab boot --detach`, pinned key.",
    )
    parser.add_argument("--timeout", type=float, default=None, help="seconds for CMD")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD...: run CMD")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, lab: LabConfig) -> int:
    state = detached.load_state()
    if state is None:
        raise UserError("no lab VM is running", "start one: `lab boot --detach`")
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    ep = state.endpoint
    if not cmd:
        return session.interactive(ep)
    code = session.run_streamed(ep, cmd, timeout_s=args.timeout)
    if code is None:
        raise InfraError("the SSH connection died", f"see the console: {state.console_log}")
    return code
