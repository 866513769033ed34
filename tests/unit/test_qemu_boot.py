"""boot(): ports, the SSH banner, and boot()'s failure paths and teardown against a QEMU
stand-in (tests/unit/fake_qemu.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Protocol

import pytest

from harness import config
from harness.errors import InfraError
from harness.image import Image
from harness.qemu import accel
from harness.qemu import boot as qemu_boot
from harness.qemu.machine import Machine


def test_free_port_is_on_loopback_and_bindable() -> None:
    port = qemu_boot.free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_ssh_banner_needs_an_ssh_server() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        # Accepting without a banner (QEMU's user-net before sshd) is not "up".
        assert not qemu_boot.ssh_banner(port, timeout=0.3)
    assert not qemu_boot.ssh_banner(qemu_boot.free_port(), timeout=0.3)


# --- boot() against the QEMU stand-in ----------------------------------------------


class FakeBoot(Protocol):
    def __call__(self, mode: str, nested: bool = False, **vm_changes: object) -> Machine: ...


@pytest.fixture
def fake_boot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeBoot:
    qemu = tmp_path / "qemu"
    qemu.write_text(f"#!{sys.executable}\n" + (Path(__file__).parent / "fake_qemu.py").read_text())
    qemu.chmod(0o755)
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "16M"], check=True)
    (tmp_path / "bzImage").write_bytes(b"kernel")
    key = tmp_path / "id"
    key.write_text("k")
    img = Image(base, "h", key, key, key, "ssh-ed25519 AAAA")

    def no_kvm(qemu: str, kernel: Path) -> accel.Probe:
        return accel.Probe(False, "test", (10, 0, 0))

    monkeypatch.setattr(accel, "cached_probe", no_kvm)
    lab = config.load()
    lab = lab.model_copy(
        update={"vm": lab.vm.model_copy(update={"qemu": str(qemu), "boot_timeout_s": 20})}
    )

    def boot(mode: str, nested: bool = False, **vm_changes: object) -> Machine:
        monkeypatch.setenv("FAKE_QEMU_MODE", mode)
        lab_ = lab.model_copy(update={"vm": lab.vm.model_copy(update=vm_changes)})
        return qemu_boot.boot(
            lab_, tmp_path / "bzImage", img, tmp_path / "run", probe_nested=nested
        )

    return boot


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_boot_reaches_ssh_and_stop_quits_through_qmp(fake_boot: FakeBoot, tmp_path: Path) -> None:
    with fake_boot("ssh") as m:
        assert m.alive()
        assert m.accel == "tcg" and m.cpu_model == "max"
        assert m.ssh_host == "127.0.0.1" and m.user == "root"
        assert m.boot_seconds > 0
        assert m.crash() is None
        assert (tmp_path / "run" / "qemu-cmdline.txt").read_text().startswith(m.qemu_argv[0])
        assert (tmp_path / "run" / "machine.json").is_file()
        known = (tmp_path / "run" / "known_hosts").read_text()
        assert known == f"[127.0.0.1]:{m.ssh_port} ssh-ed25519 AAAA\n"
        pid = m.proc.pid
    # QMP quit ended it cleanly (exit 0), not the kill.
    assert m.proc.returncode == 0
    assert gone(pid)
    assert m.stop() == 0  # twice is fine


def test_boot_panic_is_reported_with_its_lines(fake_boot: FakeBoot) -> None:
    with pytest.raises(InfraError) as info:
        fake_boot("panic")
    text = info.value.message
    assert "boot failed: the kernel crashed while booting" in text
    assert "bug at line 2: BUG: kernel NULL pointer dereference" in text
    assert "Kernel panic - not syncing: Fatal exception" in text
    assert "QEMU command line" in text and "-no-reboot" in text
    assert "console tail" in text


def test_qemu_exit_is_reported_with_its_output(fake_boot: FakeBoot) -> None:
    with pytest.raises(InfraError) as info:
        fake_boot("exit")
    text = info.value.message
    assert "QEMU exited with status 1 before SSH came up" in text
    assert "Could not open 'x'" in text


def test_silent_guest_hits_the_watchdog_and_is_killed(fake_boot: FakeBoot, tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(InfraError, match="no console output for 5s"):
        fake_boot("silent", silence_timeout_s=5)
    assert time.monotonic() - start < 15
    cmd = (tmp_path / "run" / "qemu-cmdline.txt").read_text()
    assert cmd  # written before the start
    out = subprocess.run(["pgrep", "-f", str(tmp_path / "qemu")], capture_output=True)
    assert out.stdout == b""


def test_interrupt_during_boot_leaves_no_qemu(
    fake_boot: FakeBoot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(machine: Machine, spec: config.VmSpec) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(qemu_boot, "_wait_for_ssh", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fake_boot("silent")
    time.sleep(0.2)
    out = subprocess.run(["pgrep", "-f", str(tmp_path / "qemu")], capture_output=True)
    assert out.stdout == b""


def test_missing_kernel_is_reported(fake_boot: FakeBoot, tmp_path: Path) -> None:
    (tmp_path / "bzImage").unlink()
    with pytest.raises(InfraError, match="no kernel at"):
        fake_boot("ssh")


def test_lean_boot_learns_nested_from_the_console(fake_boot: FakeBoot, tmp_path: Path) -> None:
    with fake_boot("ssh", nested=True) as m:
        assert m.nested
        assert m.nested_info.created == (0, 1)
    info = (tmp_path / "run" / "machine.json").read_text()
    assert '"nested": true' in info


def test_missing_base_image_is_reported(fake_boot: FakeBoot, tmp_path: Path) -> None:
    (tmp_path / "base.qcow2").unlink()
    with pytest.raises(InfraError, match="cannot create the boot overlay"):
        fake_boot("ssh")


def test_a_taken_port_is_retried_with_another(
    fake_boot: FakeBoot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_QEMU_FLAG", str(tmp_path / "failed-once"))
    with fake_boot("port-taken-once") as m:
        assert m.alive()
    assert (tmp_path / "failed-once").exists()


def test_deep_run_dir_boots_and_cleans_its_socket_folder(
    fake_boot: FakeBoot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_boot = qemu_boot.boot
    deep = tmp_path / ("r" * 70) / ("s" * 50)

    def boot_deep(
        lab: config.LabConfig, bzimage: Path, img: Image, run_dir: Path, **kw: Any
    ) -> Machine:
        return real_boot(lab, bzimage, img, deep, **kw)

    monkeypatch.setattr(qemu_boot, "boot", boot_deep)
    with fake_boot("ssh") as m:
        assert m.qmp_socket.parent != deep
        socket_dir = m.qmp_socket.parent
    assert m.proc.returncode == 0  # QMP quit through the short path worked
    assert not socket_dir.exists()
