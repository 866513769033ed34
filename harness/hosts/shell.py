"""The remote operations the host stage uses, and their SSH implementation.

The stage talks to a host through `HostShell` (run an argv, put a file, close) and gets
new sessions from a `Connector` (a kexec or a reboot ends every session, so sessions are
opened again, not kept). `RemoteShell` (harness.remote's Remote plus put) and
`ssh_connector` implement both over SSH (fabric/paramiko, RejectPolicy, the user's
known_hosts); unit tests use small fakes of the same two shapes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import paramiko

from harness.errors import InfraError
from harness.remote import Endpoint, Remote
from harness.suites.base import CommandRunner


class HostShell(CommandRunner, Protocol):
    """The suites' CommandRunner (run an argv), plus put and close."""

    def put(self, local: Path, remote_path: str) -> None: ...

    def close(self) -> None: ...


class NotReachable(InfraError):
    """No SSH session within the deadline (the host is down or still booting)."""


# A new, connected session, trying until deadline_s; NotReachable when there is none.
Connector = Callable[[float], HostShell]

# harness.remote's words for "tried until the deadline": every other connect error
# (changed or unknown host key, refused authentication) is final, never waited out.
_DEADLINE_WORDS = "no SSH connection within"


class RemoteShell(Remote):
    """HostShell over harness.remote's SSH session: its run and close, plus put."""

    def put(self, local: Path, remote_path: str) -> None:
        """Copy one file over SFTP (fabric's put)."""
        try:
            self.conn.put(str(local), remote=remote_path)
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise InfraError(
                f"{self.endpoint.describe()}: copying {local.name} to {remote_path} failed: {exc}",
                "check the host's free space (df) and that its sshd offers SFTP",
            ) from None


def ssh_connector(endpoint: Endpoint, connect_timeout: int = 5, retry_s: float = 2.0) -> Connector:
    """Sessions to endpoint, each attempt bounded by connect_timeout."""

    def connect(deadline_s: float) -> HostShell:
        remote = RemoteShell(endpoint, connect_timeout=connect_timeout)
        try:
            remote.connect(deadline_s=deadline_s, retry_every_s=retry_s)
        except InfraError as exc:
            remote.close()
            if _DEADLINE_WORDS in exc.what:
                raise NotReachable(exc.what, exc.fix) from None
            raise
        return remote

    return connect
