"""Commands and files over SSH to the lab VM or a bare-metal host (fabric/paramiko).

Trust is explicit: the host key is pinned (the VM's comes from the image; a bare-metal
host's from the user's known_hosts) and an unknown or changed key is refused
(RejectPolicy, never AutoAddPolicy). For the VM only the lab's key is offered: no agent,
no ~/.ssh keys, no ~/.ssh/config. A bare-metal host is reached through the user's SSH
config (aliases, ProxyJump, agent), so nothing here assumes 127.0.0.1.

Only connecting is retried (sshd may still be starting); a command is never re-run.
Files go out as one tar stream and come back the same way, over a raw channel, because
invoke's stdin handling decodes text and would corrupt a binary archive.
"""

from __future__ import annotations

import contextlib
import io
import shlex
import tarfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import paramiko
from fabric import Config, Connection
from invoke.exceptions import CommandTimedOut, ThreadException, UnexpectedExit
from paramiko.ssh_exception import NoValidConnectionsError

from harness.errors import InfraError

# The guest's own `timeout` ends a runaway test; this much later the SSH side gives up.
_KILL_GRACE_S = 10
_LOCAL_GRACE_S = 30
# GNU timeout's exit status when it had to stop the command.
_TIMEOUT_EXIT = 124
# Each phase of opening a session has its own deadline. paramiko's defaults are 15 s for
# the banner, 30 s for authentication and an hour to open a channel, so a guest that
# stops answering without dying (paused on a full disk, stopped) would hold one attempt
# for up to an hour; with these, one attempt gives up within about 30 s (TCP connect,
# then the first of banner/auth/channel that stalls).
SSH_CONNECT_TIMEOUT_S = 10
SSH_BANNER_TIMEOUT_S = 10
SSH_AUTH_TIMEOUT_S = 10
SSH_CHANNEL_TIMEOUT_S = 10


@dataclass(frozen=True)
class Endpoint:
    """Where to connect and whom to trust."""

    host: str
    port: int | None = None
    user: str | None = None
    # The lab's private key; None means the user's own SSH setup (config, agent).
    key_file: Path | None = None
    # The pinned host key ('ssh-ed25519 AAAA...'); None means the user's known_hosts.
    host_key_line: str | None = None
    # Read ~/.ssh/config (bare-metal hosts); never for the lab VM.
    use_ssh_config: bool = False
    # With use_ssh_config: files read before the user's own (the lab's `host-vm`
    # entries), so their Host blocks win for their names.
    ssh_config_files: tuple[Path, ...] = ()

    def describe(self) -> str:
        where = f"{self.host}:{self.port}" if self.port else self.host
        return f"{self.user}@{where}" if self.user else where


@dataclass(frozen=True)
class Ran:
    """One finished (or abandoned) remote command."""

    command: str
    exit_code: int | None
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False
    # The connection died under the command (VM killed, network gone).
    lost: bool = False
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not (self.timed_out or self.lost)


def remote_command(
    argv: Sequence[str], *, timeout_s: float | None = None, cwd: str | None = None
) -> str:
    """A shell command line from an argv: every word quoted, nothing pasted raw."""
    words = list(argv)
    if timeout_s is not None:
        words = ["timeout", "-k", str(_KILL_GRACE_S), str(max(1, int(timeout_s))), *words]
    line = shlex.join(words)
    return f"cd {shlex.quote(cwd)} && {line}" if cwd else line


def _connection(ep: Endpoint, connect_timeout: int) -> Connection:
    connect_kwargs: dict[str, Any] = {
        "banner_timeout": SSH_BANNER_TIMEOUT_S,
        "auth_timeout": SSH_AUTH_TIMEOUT_S,
        "channel_timeout": SSH_CHANNEL_TIMEOUT_S,
    }
    if ep.use_ssh_config:
        config = Config(ssh_config=ssh_config(ep.ssh_config_files))
    else:
        # An explicit, empty SSHConfig stops fabric from reading the user's files.
        config = Config(ssh_config=paramiko.SSHConfig())
        connect_kwargs |= {"look_for_keys": False, "allow_agent": False}
    if ep.key_file is not None:
        connect_kwargs["key_filename"] = [str(ep.key_file)]
    conn = Connection(
        ep.host,
        user=ep.user,
        port=ep.port,
        config=config,
        connect_timeout=connect_timeout,
        connect_kwargs=connect_kwargs,
    )
    # fabric installs AutoAddPolicy in its constructor; an unknown key must be refused.
    conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    if ep.host_key_line is not None:
        from harness import keys  # the VM stage's pinning helper

        pinned = keys.host_keys_for(conn.host, conn.port, ep.host_key_line)
        trusted = conn.client.get_host_keys()
        for name in pinned:
            for keytype, key in pinned[name].items():
                trusted.add(name, keytype, key)
    else:
        # OpenSSH's rule: UserKnownHostsFile, where the SSH config sets it, replaces
        # ~/.ssh/known_hosts (paramiko does not read that option itself).
        known = conn.ssh_config.get("userknownhostsfile") if ep.use_ssh_config else None
        if known:
            whole = Path(known).expanduser()
            for file in (
                [whole] if whole.exists() else [Path(w).expanduser() for w in known.split()]
            ):
                with contextlib.suppress(FileNotFoundError):
                    conn.client.load_host_keys(str(file))
        else:
            conn.client.load_system_host_keys()
    return conn


USER_SSH_CONFIGS = (Path("~/.ssh/config"), Path("/etc/ssh/ssh_config"))


def ssh_config(first: Sequence[Path] = ()) -> paramiko.SSHConfig:
    """The SSH config a bare-metal host is looked up in: first (in order), then the
    user's ~/.ssh/config and the system's (fabric's defaults); for each option the
    first file that sets it wins, as in OpenSSH."""
    parsed = paramiko.SSHConfig()
    for path in (*first, *USER_SSH_CONFIGS):
        try:
            with path.expanduser().open() as f:
                parsed.parse(f)
        except (FileNotFoundError, NotADirectoryError):
            continue
    return parsed


# Failures that mean "not reachable yet"; a wrong host key or refused key never are.
_NOT_YET: tuple[type[BaseException], ...] = (
    NoValidConnectionsError,
    TimeoutError,
    ConnectionError,
    EOFError,
    OSError,
)


class Remote:
    """An SSH session to one endpoint; use as a context manager."""

    def __init__(self, endpoint: Endpoint, connect_timeout: int = SSH_CONNECT_TIMEOUT_S) -> None:
        self.endpoint = endpoint
        self.conn = _connection(endpoint, connect_timeout)

    def __enter__(self) -> Remote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        # Closing a dead transport must not hide the real error.
        with contextlib.suppress(Exception):
            self.conn.close()

    # --- connecting ------------------------------------------------------------------

    def connect(self, deadline_s: float = 60.0, retry_every_s: float = 1.0) -> float:
        """Open the connection, retrying only until it is up; returns seconds taken."""
        start = time.monotonic()
        last = ""
        while True:
            try:
                self.conn.open()
                if self.conn.transport is not None:
                    # Notice a dead peer (killed VM) within seconds, not at TCP timeout.
                    self.conn.transport.set_keepalive(5)
                return time.monotonic() - start
            except paramiko.BadHostKeyException as exc:
                raise InfraError(
                    f"{self.endpoint.describe()}: host key does not match the pinned key "
                    f"({exc.key.get_name()} {exc.key.fingerprint}); refusing to connect",
                    "if the image was rebuilt, rerun `lab image`; otherwise investigate",
                ) from None
            except paramiko.AuthenticationException as exc:
                raise InfraError(
                    f"{self.endpoint.describe()}: SSH authentication failed: {exc}",
                    "check that the image holds the lab's public key (`lab image` rebuilds)",
                ) from None
            except paramiko.SSHException as exc:
                # RejectPolicy's refusal of an unknown key: never worth a retry.
                if "not found in known_hosts" in str(exc):
                    raise InfraError(
                        f"{self.endpoint.describe()}: host key is not trusted: {exc}",
                        "add the host to your known_hosts (ssh-keyscan, then verify it)",
                    ) from None
                last = str(exc)  # e.g. "Error reading SSH protocol banner": sshd not up
            except _NOT_YET as exc:
                last = str(exc) or type(exc).__name__
            if time.monotonic() - start + retry_every_s > deadline_s:
                raise InfraError(
                    f"{self.endpoint.describe()}: no SSH connection within {deadline_s:.0f}s "
                    f"(last error: {last})",
                    "see the console log for why the guest did not come up",
                )
            self.close()
            time.sleep(retry_every_s)

    def alive(self) -> bool:
        transport = self.conn.transport
        return transport is not None and bool(transport.is_active())

    # --- commands --------------------------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout_s: float,
        cwd: str | None = None,
        log: Path | None = None,
    ) -> Ran:
        """Run argv in the guest, bounded by timeout_s there and a little later here.

        With log, stdout and stderr go to that file as they arrive, so a command cut
        short by a dying VM still leaves its output on disk.
        """
        command = remote_command(argv, timeout_s=timeout_s, cwd=cwd)
        start = time.monotonic()
        sink: TextIO | None = None
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            sink = log.open("w", encoding="utf-8", errors="replace", buffering=1)
            sink.write(f"$ {command}\n")
        try:
            result = self.conn.run(
                command,
                hide=sink is None,
                warn=False,
                pty=False,
                in_stream=False,
                out_stream=sink,
                err_stream=sink,
                timeout=timeout_s + _KILL_GRACE_S + _LOCAL_GRACE_S,
            )
            return self._ran(command, result.exited, result, start)
        except CommandTimedOut as exc:
            return self._ran(command, None, exc.result, start, timed_out=True)
        except UnexpectedExit as exc:
            return self._ran(command, exc.result.exited, exc.result, start)
        except (ThreadException, paramiko.SSHException, OSError, EOFError) as exc:
            return Ran(
                command,
                None,
                "",
                "",
                time.monotonic() - start,
                lost=True,
                error=f"{type(exc).__name__}: {exc}".strip(),
            )
        finally:
            if sink is not None:
                sink.close()

    def _ran(
        self, command: str, code: int | None, result: Any, start: float, timed_out: bool = False
    ) -> Ran:
        seconds = time.monotonic() - start
        lost = False
        error = ""
        if code == _TIMEOUT_EXIT:
            timed_out = True
        if code is not None and code < 0:
            # paramiko reports -1 when the channel closed without an exit status.
            code, lost = None, True
            error = "the connection closed before the command's exit status arrived"
        if not lost and not timed_out and not self.alive():
            lost, error = True, "the SSH transport is down"
        return Ran(
            command,
            code,
            getattr(result, "stdout", "") or "",
            getattr(result, "stderr", "") or "",
            seconds,
            timed_out=timed_out,
            lost=lost,
            error=error,
        )

    # --- files -----------------------------------------------------------------------

    def _exec_bytes(
        self, command: str, stdin: bytes | None = None, timeout_s: float = 300.0
    ) -> tuple[int, bytes, bytes]:
        """Run command on a raw channel: binary stdin/stdout, no text decoding."""
        if self.conn.transport is None:
            raise InfraError(f"{self.endpoint.describe()}: not connected", "call connect() first")
        try:
            # Bounded like the session's own channels (channel_timeout), so a guest that
            # stopped answering cannot hold a transfer at the open.
            channel = self.conn.transport.open_session(timeout=SSH_CHANNEL_TIMEOUT_S)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise InfraError(
                f"{self.endpoint.describe()}: could not open an SSH channel ({command!r}): "
                f"{exc or type(exc).__name__}",
                "check that the guest is still up and not paused (console log, QMP status)",
            ) from None
        try:
            channel.settimeout(timeout_s)
            channel.exec_command(command)
            if stdin is not None:
                channel.sendall(stdin)
                channel.shutdown_write()
            out = _drain(channel.recv)
            err = _drain(channel.recv_stderr)
            return int(channel.recv_exit_status()), out, err
        except (TimeoutError, paramiko.SSHException, OSError, EOFError) as exc:
            raise InfraError(
                f"{self.endpoint.describe()}: transfer failed ({command!r}): {exc}",
                "check that the guest is still up (console log)",
            ) from None
        finally:
            channel.close()

    def push(self, items: Iterable[tuple[Path, str]], dest: str, timeout_s: float = 300.0) -> int:
        """Send files/folders as ONE gzip'd tar stream, unpacked into a fresh dest.

        items are (local path, name inside dest). Returns the bytes sent.
        """
        data = pack(items)
        q = shlex.quote(dest)
        command = f"rm -rf {q} && mkdir -p {q} && tar -xzf - -C {q}"
        code, _, err = self._exec_bytes(command, stdin=data, timeout_s=timeout_s)
        if code != 0:
            raise InfraError(
                f"{self.endpoint.describe()}: unpacking into {dest} failed (exit {code}): "
                f"{err.decode(errors='replace').strip()[-500:]}",
                "check free space in the guest (df) and that tar is installed",
            )
        return len(data)

    def fetch(self, remote_dir: str, local_dir: Path, timeout_s: float = 300.0) -> list[Path]:
        """Copy a remote folder's contents into local_dir (one tar stream back)."""
        command = f"tar -cf - -C {shlex.quote(remote_dir)} ."
        code, out, err = self._exec_bytes(command, timeout_s=timeout_s)
        if code != 0:
            raise InfraError(
                f"{self.endpoint.describe()}: reading {remote_dir} failed (exit {code}): "
                f"{err.decode(errors='replace').strip()[-500:]}",
                "the suite may not have written any results",
            )
        return unpack(out, local_dir)

    def read_text(self, path: str, timeout_s: float = 60.0) -> str | None:
        """A remote file's text, or None when it does not exist."""
        code, out, _ = self._exec_bytes(f"cat -- {shlex.quote(path)}", timeout_s=timeout_s)
        return out.decode(errors="replace") if code == 0 else None


def _drain(recv: Any) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _skip_caches(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    name = info.name
    if "__pycache__" in name or name.endswith((".pyc", ".o", ".d")):
        return None
    return info


def pack(items: Iterable[tuple[Path, str]]) -> bytes:
    """A gzip'd tar (fast level: the guest unpacks it under emulation) of items."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for local, arcname in items:
            tar.add(local, arcname=arcname, filter=_skip_caches)
    return buf.getvalue()


def unpack(data: bytes, dest: Path) -> list[Path]:
    """Extract a tar safely: the 'data' filter refuses absolute paths, .. and devices."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            members = [m for m in tar.getmembers() if m.isfile()]
            tar.extractall(dest, members=members, filter="data")
    except tarfile.TarError as exc:
        raise InfraError(
            f"refusing the archive sent back by the guest: {exc}",
            "the guest's results folder holds something other than plain files",
        ) from None
    return [dest / m.name for m in members]
