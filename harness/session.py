"""A person's SSH session to a lab VM: one streamed command, or an interactive shell.

Built on harness.remote (pinned host key, RejectPolicy, only the lab's key, no agent, no
~/.ssh/config); used by `lab boot -- CMD`, `lab boot` and `lab ssh`.
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Sequence

import paramiko
from invoke.exceptions import ThreadException, UnexpectedExit

from harness import interrupt
from harness.errors import InfraError
from harness.remote import Endpoint, Remote
from harness.ssh_connect import SSH_CHANNEL_TIMEOUT_S


def run_streamed(
    ep: Endpoint, argv: Sequence[str], *, timeout_s: float | None, connect_s: float = 30.0
) -> int | None:
    """Run argv in the guest with its output on ours; its exit status, None if the
    connection died under it (the caller then looks at the console for why).

    A raw paramiko channel, not invoke's runner: invoke swallows Ctrl-C (it forwards it
    to the remote and keeps waiting), and the lab must stop and tear the VM down.
    """
    # One word: the command as typed; several: each word quoted (never pasted).
    command = argv[0] if len(argv) == 1 else shlex.join(argv)
    with Remote(ep) as remote:
        remote.connect(deadline_s=connect_s)
        transport = remote.conn.client.get_transport()
        if transport is None:
            return None
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        try:
            chan = transport.open_session(timeout=SSH_CHANNEL_TIMEOUT_S)
            chan.settimeout(0.2)
            chan.exec_command(command)
            while True:
                interrupt.check()
                _pump(chan)
                if chan.exit_status_ready() and not (chan.recv_ready() or chan.recv_stderr_ready()):
                    break
                if not transport.is_active():
                    return None
                if deadline is not None and time.monotonic() > deadline:
                    raise InfraError(
                        f"`{command}` did not finish within {timeout_s:.0f}s", "raise --timeout"
                    )
            _pump(chan)
            code: int = chan.recv_exit_status()
        except (paramiko.SSHException, OSError, EOFError):
            return None
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        # -1: the server sent no status (the connection ended first).
        return None if code < 0 else code


def _pump(chan: paramiko.Channel) -> None:
    """Copy whatever the command printed so far to our stdout and stderr."""
    got = False
    while chan.recv_ready():
        sys.stdout.buffer.write(chan.recv(65536))
        got = True
    while chan.recv_stderr_ready():
        sys.stderr.buffer.write(chan.recv_stderr(65536))
        got = True
    if got:
        sys.stdout.flush()
        sys.stderr.flush()
    elif not chan.exit_status_ready():
        # Nothing yet: wait briefly for data instead of spinning.
        chan.status_event.wait(0.05)


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
