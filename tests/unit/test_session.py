"""`lab boot -- CMD` / `lab ssh -- CMD`: output streamed, exit status passed on, a dead
connection reported as None (the caller then reads the console)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from harness import session
from harness.errors import InfraError
from harness.remote import Endpoint


class FakeChannel:
    def __init__(self, out: list[bytes], err: list[bytes], status: int, hang: bool) -> None:
        self.out, self.err, self.status, self.hang = list(out), list(err), status, hang
        self.command = ""
        self.status_event = threading.Event()

    def settimeout(self, t: float) -> None:
        pass

    def exec_command(self, command: str) -> None:
        self.command = command

    def recv_ready(self) -> bool:
        return bool(self.out)

    def recv(self, n: int) -> bytes:
        return self.out.pop(0)

    def recv_stderr_ready(self) -> bool:
        return bool(self.err)

    def recv_stderr(self, n: int) -> bytes:
        return self.err.pop(0)

    def exit_status_ready(self) -> bool:
        return not self.hang and not self.out and not self.err

    def recv_exit_status(self) -> int:
        return self.status


class FakeTransport:
    def __init__(self, chan: FakeChannel, active: bool = True) -> None:
        self.chan, self.active = chan, active

    def open_session(self, timeout: float | None = None) -> FakeChannel:
        return self.chan

    def is_active(self) -> bool:
        return self.active


def fake_remote(monkeypatch: pytest.MonkeyPatch, transport: FakeTransport) -> None:
    class Client:
        def get_transport(self) -> FakeTransport:
            return transport

    class Conn:
        client = Client()

    class Remote:
        def __init__(self, ep: Any) -> None:
            self.conn = Conn()

        def __enter__(self) -> Remote:
            return self

        def __exit__(self, *a: object) -> None:
            pass

        def connect(self, deadline_s: float) -> float:
            return 0.0

    monkeypatch.setattr(session, "Remote", Remote)


EP = Endpoint(
    host="127.0.0.1", port=40022, user="root", key_file=Path("/k"), host_key_line="ssh-ed25519 AAAA"
)


def test_output_streams_and_status_passes_on(
    monkeypatch: pytest.MonkeyPatch, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    chan = FakeChannel([b"out1\n", b"out2\n"], [b"err1\n"], 3, hang=False)
    fake_remote(monkeypatch, FakeTransport(chan))
    assert session.run_streamed(EP, ["sh", "-c", "echo $HOME; exit 3"], timeout_s=None) == 3
    captured = capfdbinary.readouterr()
    assert captured.out == b"out1\nout2\n"
    assert captured.err == b"err1\n"
    # Several words are quoted one by one, never pasted.
    assert chan.command == "sh -c 'echo $HOME; exit 3'"


def test_one_word_is_the_command_as_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    chan = FakeChannel([], [], 0, hang=False)
    fake_remote(monkeypatch, FakeTransport(chan))
    assert session.run_streamed(EP, ["uname -r; dmesg | tail"], timeout_s=None) == 0
    assert chan.command == "uname -r; dmesg | tail"


def test_dead_connection_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    chan = FakeChannel([], [], 0, hang=True)
    fake_remote(monkeypatch, FakeTransport(chan, active=False))
    assert session.run_streamed(EP, ["sleep 100"], timeout_s=None) is None


def test_missing_exit_status_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_remote(monkeypatch, FakeTransport(FakeChannel([], [], -1, hang=False)))
    assert session.run_streamed(EP, ["true"], timeout_s=None) is None


def test_timeout_is_an_infra_error(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_remote(monkeypatch, FakeTransport(FakeChannel([], [], 0, hang=True)))
    with pytest.raises(InfraError, match="did not finish within 0s"):
        session.run_streamed(EP, ["sleep 100"], timeout_s=0.2)
