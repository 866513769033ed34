"""Commands and files over SSH to the lab VM or a bare-metal host (fabric/paramiko).

Connecting (and whom to trust) is harness.ssh_connect's job; watching a running
command is harness.remote_channel's; the payload tar stream is harness.tarpack's.
Only connecting is retried (sshd may still be starting); a command is never re-run.
Files go out as one tar stream and come back the same way, over a raw channel, because
invoke's stdin handling decodes text and would corrupt a binary archive.
"""

from __future__ import annotations

import contextlib
import shlex
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NotRequired, TextIO, TypedDict, Unpack

import paramiko

from harness import interrupt
from harness.errors import InfraError
from harness.remote_channel import Abandoned, LocalTimeout, Text, Watch, run_on_channel
from harness.ssh_connect import NOT_YET, SSH_CHANNEL_TIMEOUT_S, SSH_CONNECT_TIMEOUT_S, connection
from harness.tarpack import pack, unpack

# The guest's own `timeout` ends a runaway test; this much later the SSH side gives up.
_KILL_GRACE_S = 10
_LOCAL_GRACE_S = 30
# GNU timeout's exit status when it had to stop the command.
_TIMEOUT_EXIT = 124


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


class RunOptions(TypedDict):
    """How to run one remote command: the keyword arguments of every `run(argv, ...)`
    (Remote's, the CommandRunner Protocol's and the unit tests' fakes), written once.

    timeout_s bounds the command in the remote; cwd is the folder it runs in; with log,
    its output goes to that file as it arrives."""

    timeout_s: float
    cwd: NotRequired[str | None]
    log: NotRequired[Path | None]


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


class Remote:
    """An SSH session to one endpoint; use as a context manager.

    watch, when given, is asked every WATCH_EVERY_S while a command runs (a VM's QMP
    status): a reason from it abandons the command as lost, within seconds of the
    guest stopping, instead of waiting for the command's own timeout.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        connect_timeout: int = SSH_CONNECT_TIMEOUT_S,
        watch: Watch | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.conn = connection(endpoint, connect_timeout)
        self.watch = watch

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
            except NOT_YET as exc:
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

    def run(self, argv: Sequence[str], **options: Unpack[RunOptions]) -> Ran:
        """Run argv in the remote, bounded by timeout_s there and a little later here.

        With log, stdout and stderr go to that file as they arrive, so a command cut
        short by a dying VM (or by Ctrl-C) still leaves its output on disk. The channel
        is polled every POLL_S: Ctrl-C/SIGTERM raise Interrupted at once (the channel is
        closed, the output so far stays in log), and a target that stops answering
        (watch, transport liveness) ends the command as lost.
        """
        timeout_s, log = options["timeout_s"], options.get("log")
        command = remote_command(argv, timeout_s=timeout_s, cwd=options.get("cwd"))
        start = time.monotonic()
        sink: TextIO | None = None
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            sink = log.open("w", encoding="utf-8", errors="replace", buffering=1)
            sink.write(f"$ {command}\n")
        out, err = Text(sink), Text(sink)
        deadline = start + timeout_s + _KILL_GRACE_S + _LOCAL_GRACE_S
        code: int | None = None
        timed_out, lost, error = False, False, ""
        try:
            code = self._exec(command, out.feed, err.feed, deadline)
        except LocalTimeout:
            timed_out = True
        except Abandoned as exc:
            lost, error = True, str(exc)
        except InfraError as exc:
            lost, error = True, exc.what
        except (paramiko.SSHException, OSError, EOFError) as exc:
            lost, error = True, f"{type(exc).__name__}: {exc}".strip()
        finally:
            out.flush()
            err.flush()
            if sink is not None:
                try:
                    sink.close()
                except OSError as exc:
                    out.write_error = out.write_error or exc
        for stream in (out, err):
            if stream.write_error is not None:
                # The log could not be written (a full disk here): that, not the
                # command, is what went wrong.
                raise stream.write_error
        return self._ran(
            command, code, out, err, start, timed_out=timed_out, lost=lost, error=error
        )

    def _ran(
        self,
        command: str,
        code: int | None,
        out: Text,
        err: Text,
        start: float,
        *,
        timed_out: bool = False,
        lost: bool = False,
        error: str = "",
    ) -> Ran:
        seconds = time.monotonic() - start
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
            out.text(),
            err.text(),
            seconds,
            timed_out=timed_out,
            lost=lost,
            error=error,
        )

    def _open_channel(self, command: str) -> paramiko.Channel:
        transport = self.conn.transport
        if transport is None or not transport.is_active():
            raise InfraError(
                f"{self.endpoint.describe()}: not connected ({command!r})",
                "check that the guest is still up (console log)",
            )
        try:
            # Bounded like the session's own channels (channel_timeout), so a guest that
            # stopped answering cannot hold the command at the open.
            channel: paramiko.Channel = transport.open_session(timeout=SSH_CHANNEL_TIMEOUT_S)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise InfraError(
                f"{self.endpoint.describe()}: could not open an SSH channel ({command!r}): "
                f"{exc or type(exc).__name__}",
                "check that the guest is still up and not paused (console log, QMP status)",
            ) from None
        channel.settimeout(SSH_CHANNEL_TIMEOUT_S)
        return channel

    def _exec(
        self,
        command: str,
        on_out: Callable[[bytes], None],
        on_err: Callable[[bytes], None],
        deadline: float,
        stdin: bytes | None = None,
    ) -> int:
        """Run command on a fresh channel until it exits; its exit status (-1: none).

        Raises Interrupted (Ctrl-C/SIGTERM), LocalTimeout (deadline) and Abandoned
        (the target stopped answering); the channel is closed on every way out.
        """
        interrupt.check()
        channel = self._open_channel(command)
        return run_on_channel(channel, command, on_out, on_err, deadline, self.watch, stdin)

    # --- files -----------------------------------------------------------------------

    def _exec_bytes(
        self, command: str, stdin: bytes | None = None, timeout_s: float = 300.0
    ) -> tuple[int, bytes, bytes]:
        """Run command on a raw channel: binary stdin/stdout, no text decoding."""
        out: list[bytes] = []
        err: list[bytes] = []
        try:
            code = self._exec(
                command, out.append, err.append, time.monotonic() + timeout_s, stdin=stdin
            )
        except LocalTimeout:
            raise InfraError(
                f"{self.endpoint.describe()}: transfer did not finish within {timeout_s:.0f}s "
                f"({command!r})",
                "check that the guest is still up and not paused (console log, QMP status)",
            ) from None
        except Abandoned as exc:
            raise InfraError(
                f"{self.endpoint.describe()}: transfer abandoned ({command!r}): {exc}",
                "see the console log and the report's reason",
            ) from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise InfraError(
                f"{self.endpoint.describe()}: transfer failed ({command!r}): {exc}",
                "check that the guest is still up (console log)",
            ) from None
        return code, b"".join(out), b"".join(err)

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
