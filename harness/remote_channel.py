"""Watching a running command on its channel: output, interrupts, QMP health, keepalives."""

from __future__ import annotations

import codecs
import contextlib
import threading
import time
from collections.abc import Callable
from typing import TextIO

import paramiko

from harness import interrupt

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


def run_on_channel(
    channel: paramiko.Channel,
    command: str,
    on_out: Callable[[bytes], None],
    on_err: Callable[[bytes], None],
    deadline: float,
    watch: Watch | None,
    stdin: bytes | None = None,
) -> int:
    """Run command on an open channel until it exits; its exit status (-1: none).

    Raises Interrupted (Ctrl-C/SIGTERM), LocalTimeout (deadline) and Abandoned (the
    target stopped answering: watch, asked every WATCH_EVERY_S, or transport liveness);
    the channel is closed on every way out.
    """
    transport = channel.get_transport()
    liveness = Liveness(transport)
    next_watch = time.monotonic() + WATCH_EVERY_S
    try:
        channel.exec_command(command)
        if stdin is not None:
            send(channel, stdin, deadline, watch)
        exited_at: float | None = None
        while True:
            interrupt.check()
            got = drain(channel.recv_ready, channel.recv, on_out)
            got = drain(channel.recv_stderr_ready, channel.recv_stderr, on_err) or got
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
                raise Abandoned("the SSH transport is down")
            now = time.monotonic()
            if now > deadline:
                raise LocalTimeout
            if now >= next_watch:
                next_watch = now + WATCH_EVERY_S
                why = watch() if watch is not None else None
                if why:
                    raise Abandoned(why)
            why = liveness.check()
            if why:
                raise Abandoned(why)
            channel.status_event.wait(POLL_S)
        drain(channel.recv_ready, channel.recv, on_out)
        drain(channel.recv_stderr_ready, channel.recv_stderr, on_err)
        # Set by now (an exit status or the close): returns at once; -1 for none.
        return int(channel.recv_exit_status())
    finally:
        channel.close()


def send(channel: paramiko.Channel, data: bytes, deadline: float, watch: Watch | None) -> None:
    """Write stdin in slices, so an interrupt or a stalled peer is noticed."""
    view = memoryview(data)
    while view:
        interrupt.check()
        if time.monotonic() > deadline:
            raise LocalTimeout
        try:
            sent = channel.send(bytes(view[:32768]))
        except TimeoutError:
            why = watch() if watch is not None else None
            if why:
                raise Abandoned(why) from None
            continue
        if sent == 0:
            raise Abandoned("the channel closed while sending")
        view = view[sent:]
    channel.shutdown_write()


class Liveness:
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


class Abandoned(Exception):
    """A command given up on: the target stopped answering (the reason is the text)."""


def drain(
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


class LocalTimeout(Exception):
    """The command outlived its local deadline (the guest's own timeout did not end it)."""


class Text:
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
