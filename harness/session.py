"""A person's SSH session to a lab VM: one streamed command, or an interactive shell.

Built on harness.remote (pinned host key, RejectPolicy, only the lab's key, no agent, no
~/.ssh/config); used by `lab boot -- CMD`, `lab boot` and `lab ssh`.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import paramiko
from invoke.exceptions import CommandTimedOut, ThreadException, UnexpectedExit

from harness.errors import InfraError
from harness.remote import Endpoint, Remote


def endpoint(host: str, port: int, user: str, key: Path, host_key_line: str) -> Endpoint:
    return Endpoint(host=host, port=port, user=user, key_file=key, host_key_line=host_key_line)


def run_streamed(
    ep: Endpoint, argv: Sequence[str], *, timeout_s: float | None, connect_s: float = 30.0
) -> int | None:
    """Run argv in the guest with its output on ours; its exit status, None if the
    connection died under it (the caller then looks at the console for why)."""
    with Remote(ep) as remote:
        remote.connect(deadline_s=connect_s)
        # One word: the command as typed; several: each word quoted (never pasted).
        command = argv[0] if len(argv) == 1 else shlex.join(argv)
        try:
            result = remote.conn.run(
                command, warn=True, pty=False, hide=False, in_stream=False, timeout=timeout_s
            )
        except CommandTimedOut as exc:
            raise InfraError(
                f"`{command}` did not finish within {timeout_s:.0f}s", "raise --timeout"
            ) from exc
        except UnexpectedExit as exc:  # warn=True makes this rare, but be exact
            return int(exc.result.exited)
        except (ThreadException, paramiko.SSHException, OSError, EOFError):
            sys.stdout.flush()
            return None
        code: int = result.exited
        return code


def interactive(ep: Endpoint, connect_s: float = 30.0) -> int:
    """An interactive login shell on the guest; its exit status."""
    with Remote(ep) as remote:
        remote.connect(deadline_s=connect_s)
        try:
            result = remote.conn.shell()
        except UnexpectedExit as exc:  # the shell's last command failed: pass it on
            return int(exc.result.exited)
        except (ThreadException, paramiko.SSHException, OSError, EOFError):
            return 255
        code: int = result.exited
        return code
