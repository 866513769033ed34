"""Commands and transfers over real SSH channels to an in-process paramiko server.

What the lab promises about a running command (issue 15): its exit status, output and
log as it arrives; Ctrl-C/SIGTERM acted on within a second, not when the guest command
ends; a target that stops answering (its health check, or an SSH transport that no
longer replies) abandons the command as lost within seconds; the channel closed on
every way out.
"""

from __future__ import annotations

import gzip
import io
import os
import signal
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from harness import interrupt, keys, remote, remote_channel
from harness.errors import InfraError
from tests.unit.fake_sshd import FakeSshd, Handler, host_key_of, sshd


@pytest.fixture
def lab_keys(tmp_path: Path) -> keys.LabKeys:
    return keys.ensure_keys(tmp_path / "keys")


@pytest.fixture
def served(lab_keys: keys.LabKeys) -> Iterator[tuple[FakeSshd, remote.Remote]]:
    with sshd(host_key_of(lab_keys), lab_keys) as server:
        ep = remote.Endpoint(
            host="127.0.0.1",
            port=server.port,
            user="root",
            key_file=lab_keys.client_key,
            host_key_line=lab_keys.host_key_line,
        )
        with remote.Remote(ep) as r:
            r.connect(deadline_s=20, retry_every_s=0.1)
            yield server, r


def shorten(monkeypatch: pytest.MonkeyPatch, module: object, **seconds: float) -> None:
    """The module's named deadlines set to test-sized ones (undone after the test)."""
    for name, value in seconds.items():
        monkeypatch.setattr(module, name, value)


def use(server: FakeSshd, handler: Handler) -> None:
    server.handler = handler


def reply(out: bytes = b"", err: bytes = b"", code: int | None = 0) -> Handler:
    def handler(command: str, channel: paramiko.Channel) -> int | None:
        if out:
            channel.sendall(out)
        if err:
            channel.sendall_stderr(err)
        return code

    return handler


def serve_until_stopped(server: FakeSshd, out: bytes = b"") -> threading.Event:
    """The server's next command prints out and then runs until the channel closes; the
    event is set once it has."""
    closed = threading.Event()

    def handler(command: str, channel: paramiko.Channel) -> int | None:
        if out:
            channel.sendall(out)
        while not channel.closed and not closed.is_set():
            time.sleep(0.05)
        closed.set()
        return None

    use(server, handler)
    return closed


@pytest.mark.parametrize(
    ("exit_code", "expect_code", "timed_out", "lost"),
    [
        (0, 0, False, False),
        (1, 1, False, False),
        (4, 4, False, False),
        (124, 124, True, False),
        (None, None, False, True),  # closed without an exit status
    ],
)
def test_run_maps_exit_status(
    served: tuple[FakeSshd, remote.Remote],
    exit_code: int | None,
    expect_code: int | None,
    timed_out: bool,
    lost: bool,
) -> None:
    server, r = served
    use(server, reply(b"ok 1 a\n", code=exit_code))
    ran = r.run(["./t"], timeout_s=30)
    assert server.commands == ["timeout -k 10 30 ./t"]
    assert (ran.exit_code, ran.timed_out, ran.lost) == (expect_code, timed_out, lost)
    assert ran.ok == (exit_code == 0)
    assert ran.stdout == "ok 1 a\n"


def test_output_after_the_exit_status_is_not_lost(
    served: tuple[FakeSshd, remote.Remote],
) -> None:
    """sshd sends the exit status as soon as the command exits, while the rest of its
    output may still be on the way (it cut a 33 KB junit.xml at 32 KiB in a real run)."""
    server, r = served
    body = b"".join(b"<testcase name='t%d'/>\n" % i for i in range(20000))

    def late(command: str, channel: paramiko.Channel) -> None:
        channel.sendall(body[:32768])
        channel.send_exit_status(0)
        time.sleep(0.3)
        channel.sendall(body[32768:])
        channel.shutdown_write()  # EOF
        return None

    use(server, late)
    ran = r.run(["cat", "junit.xml"], timeout_s=30)
    assert ran.exit_code == 0 and ran.stdout.encode() == body
    use(server, late)
    assert r.read_text("/out/junit.xml") == body.decode()


def test_a_background_child_holding_the_pipe_does_not_hold_the_lab(
    served: tuple[FakeSshd, remote.Remote], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(remote_channel, "EOF_GRACE_S", 0.5)
    server, r = served

    def lingering(command: str, channel: paramiko.Channel) -> None:
        channel.sendall(b"done\n")
        channel.send_exit_status(0)
        time.sleep(5)  # no EOF: something still holds the output open
        return None

    use(server, lingering)
    start = time.monotonic()
    ran = r.run(["sh", "-c", "daemon &"], timeout_s=30)
    assert ran.ok and ran.stdout == "done\n"
    assert time.monotonic() - start < 3


def test_run_streams_output_to_a_log(
    served: tuple[FakeSshd, remote.Remote], tmp_path: Path
) -> None:
    server, r = served
    # A multi-byte character split across two writes is decoded whole.
    use(server, reply("TAP version 13\nok 1 a \u00e9\n".encode(), b"warn\n", code=1))
    log = tmp_path / "raw" / "t.log"
    ran = r.run(["./t"], timeout_s=5, log=log)
    text = log.read_text()
    assert ran.exit_code == 1
    assert text.startswith("$ timeout -k 10 5 ./t\n")
    assert "ok 1 a \u00e9" in text and "warn" in text
    assert ran.stderr == "warn\n"


def test_run_local_timeout_becomes_timed_out(
    served: tuple[FakeSshd, remote.Remote], monkeypatch: pytest.MonkeyPatch
) -> None:
    shorten(monkeypatch, remote, _KILL_GRACE_S=0, _LOCAL_GRACE_S=0)
    server, r = served
    closed = serve_until_stopped(server, b"partial\n")
    ran = r.run(["sleep", "600"], timeout_s=0.3)
    assert ran.timed_out and ran.stdout == "partial\n"
    assert closed.wait(5)  # the lab closed the channel


def test_interrupt_stops_a_running_command_at_once(
    served: tuple[FakeSshd, remote.Remote], tmp_path: Path
) -> None:
    """SIGTERM while the guest command sleeps: Interrupted within a second, the channel
    closed, the output so far in the log (issue 15: it waited for the command)."""
    server, r = served
    closed = serve_until_stopped(server, b"started\n")
    log = tmp_path / "cmd.log"
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
    with interrupt.handlers():
        timer.start()
        start = time.monotonic()
        with pytest.raises(interrupt.Interrupted) as info:
            r.run(["sleep", "600"], timeout_s=900, log=log)
        elapsed = time.monotonic() - start
    assert info.value.signame == "SIGTERM"
    assert elapsed < 1.5
    assert closed.wait(5)
    assert "started" in log.read_text()


def test_interrupt_swallowed_elsewhere_is_still_seen(
    served: tuple[FakeSshd, remote.Remote],
) -> None:
    """A signal that arrived while something else swallowed the exception: the next
    command does not start, it raises."""
    server, r = served
    with interrupt.handlers():
        with pytest.raises(interrupt.Interrupted):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        with pytest.raises(interrupt.Interrupted):
            r.run(["true"], timeout_s=5)
    assert server.commands == []


def test_second_signal_while_stopping_is_only_acknowledged(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with interrupt.handlers():
        with pytest.raises(interrupt.Interrupted):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGTERM)  # while writing the report: not raised
        time.sleep(0.1)
        assert "already stopping" in capsys.readouterr().err
        with pytest.raises(interrupt.Interrupted):  # the third one gets out
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        assert interrupt.requested() == "SIGTERM"
    assert interrupt.requested() is None


def test_unhealthy_target_abandons_the_command(
    served: tuple[FakeSshd, remote.Remote], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The VM's QMP status says paused: the command is lost within the watch period."""
    monkeypatch.setattr(remote_channel, "WATCH_EVERY_S", 0.2)
    server, r = served
    closed = serve_until_stopped(server)
    since = time.monotonic()
    r.watch = lambda: "QEMU paused the guest (io-error)" if time.monotonic() - since > 1 else None
    ran = r.run(["sleep", "600"], timeout_s=900)
    assert ran.lost and "io-error" in ran.error
    assert time.monotonic() - since < 2.5
    assert closed.wait(5)


def test_peer_that_stops_answering_is_lost(
    served: tuple[FakeSshd, remote.Remote], monkeypatch: pytest.MonkeyPatch
) -> None:
    """TCP stays up but the peer no longer answers (a frozen guest): lost after the
    liveness timeout, not at the command's own timeout."""
    shorten(monkeypatch, remote_channel, LIVENESS_QUIET_S=0.3, LIVENESS_TIMEOUT_S=1.0)
    server, r = served
    serve_until_stopped(server)
    server.frozen.set()
    start = time.monotonic()
    ran = r.run(["sleep", "600"], timeout_s=900)
    server.frozen.clear()
    assert ran.lost and "stopped answering" in ran.error
    assert time.monotonic() - start < 3


def test_quiet_but_answering_peer_is_not_lost(
    served: tuple[FakeSshd, remote.Remote], monkeypatch: pytest.MonkeyPatch
) -> None:
    shorten(monkeypatch, remote_channel, LIVENESS_QUIET_S=0.2, LIVENESS_TIMEOUT_S=0.5)
    server, r = served

    def slow(command: str, channel: paramiko.Channel) -> int:
        time.sleep(1.5)  # silent, but its transport answers keepalives
        return 0

    use(server, slow)
    ran = r.run(["sleep", "1"], timeout_s=30)
    assert ran.ok and server.global_requests >= 2


def test_transport_dying_mid_command_is_lost(served: tuple[FakeSshd, remote.Remote]) -> None:
    server, r = served

    def die(command: str, channel: paramiko.Channel) -> None:
        time.sleep(0.3)
        channel.get_transport().close()

    use(server, die)
    ran = r.run(["sleep", "600"], timeout_s=900)
    assert ran.lost and ran.exit_code is None


def test_log_on_a_full_disk_is_a_disk_error_not_a_lost_vm(
    served: tuple[FakeSshd, remote.Remote], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, r = served
    use(server, reply(b"x" * 10000 + b"\n"))

    class FullFile(io.StringIO):
        def write(self, text: str) -> int:
            if len(text) > 100:
                raise OSError(28, "No space left on device")
            return super().write(text)

    real_open = Path.open
    monkeypatch.setattr(
        Path,
        "open",
        lambda self, *a, **k: FullFile() if self.name == "t.log" else real_open(self, *a, **k),
    )
    with pytest.raises(OSError, match="No space left"):
        r.run(["./t"], timeout_s=5, log=tmp_path / "t.log")


def stdin_sink(received: list[bytes], code: int = 0, err: bytes = b"") -> Handler:
    def handler(command: str, channel: paramiko.Channel) -> int:
        chunks = []
        while True:
            data = channel.recv(65536)
            if not data:
                break
            chunks.append(data)
        received.append(b"".join(chunks))
        if err:
            channel.sendall_stderr(err)
        return code

    return handler


def test_push_sends_one_tar_stream(served: tuple[FakeSshd, remote.Remote], tmp_path: Path) -> None:
    server, r = served
    (tmp_path / "guest").mkdir()
    (tmp_path / "guest" / "test_a.py").write_text("def test_a(): pass\n")
    (tmp_path / "guest" / "__pycache__").mkdir()
    (tmp_path / "guest" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (tmp_path / "st").mkdir()
    (tmp_path / "st" / "guest_memfd_test").write_bytes(os.urandom(200_000))  # > one slice
    dest = "/var/tmp/gmemlab/payload"
    received: list[bytes] = []
    use(server, stdin_sink(received))
    sent = r.push([(tmp_path / "guest", "guest"), (tmp_path / "st", "selftests")], dest)
    assert server.commands == [f"rm -rf {dest} && mkdir -p {dest} && tar -xzf - -C {dest}"]
    (data,) = received
    assert len(data) == sent
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
        names = sorted(tar.getnames())
    assert names == ["guest", "guest/test_a.py", "selftests", "selftests/guest_memfd_test"]


def test_push_failure_names_the_cause(
    served: tuple[FakeSshd, remote.Remote], tmp_path: Path
) -> None:
    server, r = served
    use(server, stdin_sink([], code=2, err=b"tar: write error: No space left on device\n"))
    with pytest.raises(InfraError, match="No space left"):
        r.push([(tmp_path, "x")], "/var/tmp/p")


def test_transfer_to_an_unhealthy_target_is_an_infra_error(
    served: tuple[FakeSshd, remote.Remote], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(remote_channel, "WATCH_EVERY_S", 0.1)
    server, r = served
    serve_until_stopped(server)
    r.watch = lambda: "QEMU paused the guest (io-error)"
    with pytest.raises(InfraError, match="io-error"):
        r.read_text("/etc/hostname")


def tar_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, body in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return buf.getvalue()


def test_fetch_unpacks_results(served: tuple[FakeSshd, remote.Remote], tmp_path: Path) -> None:
    server, r = served
    use(server, reply(tar_of({"./junit.xml": b"<testsuites/>", "./raw/out.log": b"ok\n"})))
    got = r.fetch("/var/tmp/gmemlab/out", tmp_path)
    assert server.commands == ["tar -cf - -C /var/tmp/gmemlab/out ."]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in got) == [
        "junit.xml",
        "raw/out.log",
    ]
    assert (tmp_path / "raw" / "out.log").read_text() == "ok\n"


def test_fetch_refuses_paths_outside_the_folder(
    served: tuple[FakeSshd, remote.Remote], tmp_path: Path
) -> None:
    server, r = served
    use(server, reply(tar_of({"../escape": b"x"})))
    with pytest.raises(InfraError, match="refusing the archive"):
        r.fetch("/out", tmp_path / "dest")
    assert not (tmp_path / "escape").exists()


def test_read_text_missing_file_is_none(served: tuple[FakeSshd, remote.Remote]) -> None:
    server, r = served

    def cat(command: str, channel: paramiko.Channel) -> int:
        if command == "cat -- /etc/hostname":
            channel.sendall(b"vm\n")
            return 0
        return 1

    use(server, cat)
    assert r.read_text("/nope") is None
    assert r.read_text("/etc/hostname") == "vm\n"
