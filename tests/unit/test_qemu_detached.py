"""The state `lab boot --detach` leaves for `lab ssh` and `lab stop`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.qemu import detached
from harness.qemu.machine import OVERLAY
from harness.remote import Endpoint


def state_for(pid: int, run_dir: Path) -> detached.DetachedVm:
    return detached.DetachedVm(
        pid=pid,
        endpoint=Endpoint("127.0.0.1", 40022, "root", run_dir / "lab", "ssh-ed25519 AAAA"),
        qmp_socket=run_dir / "qmp.sock",
        run_dir=run_dir,
        console_log=run_dir / "console.log",
    )


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_CACHE", str(tmp_path / "cache"))


def test_state_file_keeps_its_format(tmp_path: Path) -> None:
    state = state_for(4242, tmp_path)
    data = json.loads(state.to_json())
    assert list(data) == [
        "pid", "ssh_host", "ssh_port", "user", "client_key", "host_key_line",
        "qmp_socket", "run_dir", "console_log",
    ]  # fmt: skip
    assert data["pid"] == 4242 and data["run_dir"] == str(tmp_path)
    assert detached.DetachedVm.from_json(data) == state


def test_a_stale_state_is_removed(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    detached.state_file().write_text(state_for(gone.pid, tmp_path).to_json())
    assert detached.load_state() is None
    assert not detached.state_file().exists()


def test_stop_ends_our_qemu_and_drops_the_overlay(tmp_path: Path) -> None:
    state = state_for(0, tmp_path)
    # A stand-in whose command line names the QMP socket, as QEMU's does; no QMP server,
    # so stop has to kill it.
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", str(state.qmp_socket)],
        start_new_session=True,
    )
    state = state_for(proc.pid, tmp_path)
    # Popen can return before the kernel has set the new command line (vfork): wait for
    # it, as a real detached QEMU has long run by the time its state is read.
    cmdline = Path(f"/proc/{proc.pid}/cmdline")
    deadline = time.monotonic() + 10
    while os.fsencode(state.qmp_socket) not in cmdline.read_bytes():
        assert time.monotonic() < deadline, "the stand-in never started"
        time.sleep(0.01)
    detached.state_file().write_text(state.to_json())
    (tmp_path / OVERLAY).write_bytes(b"qcow")
    (tmp_path / "console.log").write_text("boot\n")
    assert detached.load_state() == state
    detached.stop_detached(state)
    assert proc.wait(timeout=5) < 0
    assert not detached.state_file().exists()
    assert not (tmp_path / OVERLAY).exists() and (tmp_path / "console.log").exists()
