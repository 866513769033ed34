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

import codecs
import contextlib
import io
import shlex
import tarfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import paramiko
from fabric import Config, Connection
from paramiko.ssh_exception import NoValidConnectionsError

from harness import interrupt
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
# While a command runs the lab polls its channel this often, so Ctrl-C/SIGTERM and a
# stopped guest are acted on within about this long (never "when the command ends").
POLL_S = 0.1
# The target's own health check (QEMU's QMP status for a VM) runs this often.
WATCH_EVERY_S = 2.0
# Transport liveness: after this long without a byte from the peer, a keepalive that
# wants a reply is sent; no reply within LIVENESS_TIMEOUT_S means the peer stopped
# answering without closing the connection (a paused or wedged guest).
LIVENESS_QUIET_S = 10.0
LIVENESS_TIMEOUT_S = 20.0
KEEPALIVE_REQUEST = "keepalive@openssh.com"
# After the exit status, output still arriving is read to its end (EOF); this long with
# nothing more ends the wait (a background child keeping the pipe open).
EOF_GRACE_S = 5.0

# A target's health check: None while it is fine, else why it stopped answering.
Watch = Callable[[], "str | None"]


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


class _Liveness:
    """Does the peer still answer? A keepalive request with want-reply, sent from a
    helper thread after a quiet spell (paramiko's own keepalives want no reply, so a
    peer that stopped answering but kept its TCP connection open looks alive to it)."""

    def __init__(self, transport: paramiko.Transport) -> None:
        self.transport = transport
        self.heard = time.monotonic()
        self.sent: float | None = None
        self.answered = threading.Event()

    def heard_from_peer(self) -> None:
        self.heard = time.monotonic()
        self.sent = None

    def _ask(self) -> None:
        with contextlib.suppress(Exception):
            self.transport.global_request(KEEPALIVE_REQUEST, wait=True)
        self.answered.set()

    def check(self) -> str | None:
        now = time.monotonic()
        if self.sent is not None and self.answered.is_set():
            self.heard_from_peer()
        if self.sent is None:
            if now - self.heard >= LIVENESS_QUIET_S:
                self.sent = now
                self.answered = threading.Event()
                threading.Thread(target=self._ask, daemon=True, name="ssh-liveness").start()
            return None
        if now - self.sent >= LIVENESS_TIMEOUT_S:
            return (
                f"the peer stopped answering SSH (no reply to a keepalive in "
                f"{LIVENESS_TIMEOUT_S:.0f}s, nothing received for {now - self.heard:.0f}s)"
            )
        return None


class _Abandoned(Exception):
    """A command given up on: the target stopped answering (the reason is the text)."""


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
        self.conn = _connection(endpoint, connect_timeout)
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
        """Run argv in the remote, bounded by timeout_s there and a little later here.

        With log, stdout and stderr go to that file as they arrive, so a command cut
        short by a dying VM (or by Ctrl-C) still leaves its output on disk. The channel
        is polled every POLL_S: Ctrl-C/SIGTERM raise Interrupted at once (the channel is
        closed, the output so far stays in log), and a target that stops answering
        (watch, transport liveness) ends the command as lost.
        """
        command = remote_command(argv, timeout_s=timeout_s, cwd=cwd)
        start = time.monotonic()
        sink: TextIO | None = None
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            sink = log.open("w", encoding="utf-8", errors="replace", buffering=1)
            sink.write(f"$ {command}\n")
        out, err = _Text(sink), _Text(sink)
        deadline = start + timeout_s + _KILL_GRACE_S + _LOCAL_GRACE_S
        code: int | None = None
        timed_out, lost, error = False, False, ""
        try:
            code = self._exec(command, out.feed, err.feed, deadline)
        except _LocalTimeout:
            timed_out = True
        except _Abandoned as exc:
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
        out: _Text,
        err: _Text,
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

        Raises Interrupted (Ctrl-C/SIGTERM), _LocalTimeout (deadline) and _Abandoned
        (the target stopped answering); the channel is closed on every way out.
        """
        interrupt.check()
        channel = self._open_channel(command)
        transport = channel.get_transport()
        liveness = _Liveness(transport)
        next_watch = time.monotonic() + WATCH_EVERY_S
        try:
            channel.exec_command(command)
            if stdin is not None:
                self._send(channel, stdin, deadline)
            exited_at: float | None = None
            while True:
                interrupt.check()
                got = _drain(channel.recv_ready, channel.recv, on_out)
                got = _drain(channel.recv_stderr_ready, channel.recv_stderr, on_err) or got
                if got:
                    liveness.heard_from_peer()
                    if exited_at is not None:
                        exited_at = time.monotonic()
                    continue
                if channel.closed or (channel.eof_received and channel.exit_status_ready()):
                    break  # all output is in: the peer sent EOF (or closed)
                if channel.exit_status_ready():
                    # sshd may send the exit status before the rest of the output (it
                    # packetises the command's pipe 32 KiB at a time): read on until EOF,
                    # unless nothing more comes (a background child holding the pipe).
                    exited_at = exited_at or time.monotonic()
                    if time.monotonic() - exited_at > EOF_GRACE_S:
                        break
                    time.sleep(0.02)
                    continue
                if not transport.is_active():
                    raise _Abandoned("the SSH transport is down")
                now = time.monotonic()
                if now > deadline:
                    raise _LocalTimeout
                if now >= next_watch:
                    next_watch = now + WATCH_EVERY_S
                    why = self.watch() if self.watch is not None else None
                    if why:
                        raise _Abandoned(why)
                why = liveness.check()
                if why:
                    raise _Abandoned(why)
                channel.status_event.wait(POLL_S)
            _drain(channel.recv_ready, channel.recv, on_out)
            _drain(channel.recv_stderr_ready, channel.recv_stderr, on_err)
            # Set by now (an exit status or the close): returns at once; -1 for none.
            return int(channel.recv_exit_status())
        finally:
            channel.close()

    def _send(self, channel: paramiko.Channel, data: bytes, deadline: float) -> None:
        """Write stdin in slices, so an interrupt or a stalled peer is noticed."""
        view = memoryview(data)
        while view:
            interrupt.check()
            if time.monotonic() > deadline:
                raise _LocalTimeout
            try:
                sent = channel.send(bytes(view[:32768]))
            except TimeoutError:
                why = self.watch() if self.watch is not None else None
                if why:
                    raise _Abandoned(why) from None
                continue
            if sent == 0:
                raise _Abandoned("the channel closed while sending")
            view = view[sent:]
        channel.shutdown_write()

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
        except _LocalTimeout:
            raise InfraError(
                f"{self.endpoint.describe()}: transfer did not finish within {timeout_s:.0f}s "
                f"({command!r})",
                "check that the guest is still up and not paused (console log, QMP status)",
            ) from None
        except _Abandoned as exc:
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


def _drain(
    ready: Callable[[], bool], recv: Callable[[int], bytes], sink: Callable[[bytes], None]
) -> bool:
    """Pass on whatever is buffered now; True if anything was."""
    got = False
    while ready():
        data = recv(65536)
        if not data:  # end of stream
            break
        sink(data)
        got = True
    return got


class _LocalTimeout(Exception):
    """The command outlived its local deadline (the guest's own timeout did not end it)."""


class _Text:
    """One output stream: decoded as it arrives (UTF-8, bad bytes replaced), copied to
    the log when there is one, kept whole for the caller."""

    def __init__(self, sink: TextIO | None) -> None:
        self.sink = sink
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.parts: list[str] = []
        # Writing the log failed (disk full): kept, and raised once the command ends.
        self.write_error: OSError | None = None

    def feed(self, data: bytes) -> None:
        self._add(self.decoder.decode(data))

    def flush(self) -> None:
        self._add(self.decoder.decode(b"", final=True))

    def _add(self, text: str) -> None:
        if text:
            self.parts.append(text)
            if self.sink is not None and self.write_error is None:
                try:
                    self.sink.write(text)
                except OSError as exc:
                    self.write_error = exc

    def text(self) -> str:
        return "".join(self.parts)


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
