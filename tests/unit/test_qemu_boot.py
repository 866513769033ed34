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
    monkeypatch.setenv("LAB_CACHE", str(tmp_path / "cache"))  # the overlays go there
    monkeypatch.setenv("FAKE_QEMU_COUNT", str(tmp_path / "starts"))
    lab = config.load()
    lab = lab.model_copy(
        update={"vm": lab.vm.model_copy(update={"qemu": str(qemu), "boot_timeout_s": 20})}
    )

    def boot(mode: str, nested: bool = False, **vm_changes: object) -> Machine:
        monkeypatch.setenv("FAKE_QEMU_MODE", mode)
        run_dir = vm_changes.pop("run_dir", tmp_path / "run")
        assert isinstance(run_dir, Path)
        lab_ = lab.model_copy(update={"vm": lab.vm.model_copy(update=vm_changes)})
        return qemu_boot.boot(
            lab_, tmp_path / "bzImage", img, run_dir, probe_nested=nested, on_retry=retries.append
        )

    retries: list[str] = []
    boot.retries = retries  # type: ignore[attr-defined]

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
        # The one endpoint the remote layer gets: the lab key, the image's host key.
        ep = m.endpoint()
        assert (ep.host, ep.port, ep.user) == ("127.0.0.1", m.ssh_port, "root")
        assert ep.key_file == tmp_path / "id" and ep.host_key_line == "ssh-ed25519 AAAA"
        assert not ep.use_ssh_config  # the lab VM never reads ~/.ssh/config
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


@pytest.mark.parametrize(
    ("mode", "said"),
    [
        pytest.param(
            "panic",
            [
                "boot failed: the kernel crashed while booting",
                "bug at line 2: BUG: kernel NULL pointer dereference",
                "Kernel panic - not syncing: Fatal exception",
                "QEMU command line",
                "-no-reboot",
                "console tail",
            ],
            id="panic-with-its-lines",
        ),
        pytest.param(
            "exit",
            ["QEMU exited with status 1 before SSH came up", "Could not open 'x'"],
            id="qemu-exit-with-its-output",
        ),
    ],
)
def test_failed_boot_is_reported(fake_boot: FakeBoot, mode: str, said: list[str]) -> None:
    with pytest.raises(InfraError) as info:
        fake_boot(mode)
    text = info.value.message
    assert [s for s in said if s not in text] == [], text


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


def starts(tmp_path: Path) -> int:
    path = tmp_path / "starts"
    return len(path.read_text().splitlines()) if path.exists() else 0


def overlays(tmp_path: Path) -> list[Path]:
    return list((tmp_path / "cache" / "overlays").glob("*"))


def test_overlay_is_scratch_in_the_cache_and_gone_once_qemu_holds_it(
    fake_boot: FakeBoot, tmp_path: Path
) -> None:
    with fake_boot("ssh") as m:
        assert m.overlay.parent == tmp_path / "cache" / "overlays"
        assert not m.overlay.exists() and overlays(tmp_path) == []
        assert not (tmp_path / "run" / "disk.qcow2").exists()
        assert f"file={m.overlay}" in (tmp_path / "run" / "qemu-cmdline.txt").read_text()


def test_overlay_left_by_a_dead_lab_is_swept(fake_boot: FakeBoot, tmp_path: Path) -> None:
    folder = tmp_path / "cache" / "overlays"
    folder.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (folder / f"{dead.pid}-abcd.qcow2").write_bytes(b"x")
    (folder / f"{os.getpid()}-live.qcow2").write_bytes(b"x")  # a live lab's: kept
    with fake_boot("ssh"):
        assert [p.name for p in overlays(tmp_path)] == [f"{os.getpid()}-live.qcow2"]


def test_qemu_abort_during_boot_is_retried_once_and_said(
    fake_boot: FakeBoot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """QEMU 10.0.2's TCG assertion on the first start: a second boot, the reason kept in
    the machine's summary, environment and machine.json, the first console kept."""
    monkeypatch.setenv("FAKE_QEMU_FLAG", str(tmp_path / "aborted-once"))
    with fake_boot("abort-once") as m:
        assert m.alive()
        (why,) = m.retries
        assert why.startswith("QEMU was killed by SIGABRT: ") and "iotlb_to_section" in why
        assert "booted again after: QEMU was killed by SIGABRT" in m.summary()
        assert "iotlb_to_section" in str(m.environment()["boot_retried"])
        assert "iotlb_to_section" in (tmp_path / "run" / "machine.json").read_text()
    assert fake_boot.retries == [why]  # type: ignore[attr-defined]
    assert starts(tmp_path) == 2
    assert (tmp_path / "run" / "console-attempt1.log").is_file()
    assert "Assertion" in (tmp_path / "run" / "qemu-attempt1.log").read_text()
    assert overlays(tmp_path) == []


def test_qemu_that_aborts_twice_fails_after_one_retry(fake_boot: FakeBoot, tmp_path: Path) -> None:
    with pytest.raises(qemu_boot.BootFailure) as info:
        fake_boot("abort")
    assert starts(tmp_path) == 2
    assert "QEMU was killed by SIGABRT before SSH came up" in info.value.message
    assert "iotlb_to_section" in info.value.message


def test_silent_hang_before_init_is_retried_once(
    fake_boot: FakeBoot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_QEMU_FLAG", str(tmp_path / "hung-once"))
    with fake_boot("silent-once", silence_timeout_s=5) as m:
        assert m.alive() and m.retries == (
            "no console output for 5s and no SSH, no crash on the console",
        )
    assert starts(tmp_path) == 2


@pytest.mark.parametrize("mode", ["panic", "exit"])
def test_kernel_panic_and_bad_qemu_options_are_not_retried(
    fake_boot: FakeBoot, tmp_path: Path, mode: str
) -> None:
    with pytest.raises(qemu_boot.BootFailure) as info:
        fake_boot(mode)
    assert info.value.qemu_fault is None
    assert starts(tmp_path) == 1
    assert fake_boot.retries == []  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("code", "output", "fault"),
    [
        (-6, "", "QEMU was killed by SIGABRT"),
        (-11, "", "QEMU was killed by SIGSEGV"),
        (
            1,
            "qemu: fatal: Trying to execute code outside RAM\n",
            "QEMU exited with status 1: qemu: fatal:",
        ),
        (-9, "", None),  # a person or the OOM killer
        (-15, "", None),
        (1, "qemu-system-x86_64: -drive file=x: Could not open 'x'\n", None),
        (0, "", None),
    ],
)
def test_what_counts_as_qemu_failing_by_itself(code: int, output: str, fault: str | None) -> None:
    got = qemu_boot.qemu_fault(code, output)
    assert (got is None) if fault is None else (got is not None and got.startswith(fault))


def test_results_path_with_a_comma_boots(fake_boot: FakeBoot, tmp_path: Path) -> None:
    run_dir = tmp_path / "results,if=none" / "cell"
    with fake_boot("ssh", run_dir=run_dir) as m:
        assert m.alive() and m.qmp_socket.parent == run_dir
        assert (run_dir / "console.log").read_text().startswith("[    0.000000] Linux")
    assert m.proc.returncode == 0  # QMP quit through the socket path with a comma


def test_paused_guest_is_said_by_health(fake_boot: FakeBoot) -> None:
    with fake_boot("paused") as m:
        why = m.health()
        assert why is not None and "status io-error" in why and "overlay" in why
    assert m.health() == "QEMU exited with status 0"


def test_qemu_killed_by_a_signal_says_which(fake_boot: FakeBoot) -> None:
    with fake_boot("ssh") as m:
        m.proc.kill()
        m.proc.wait()
        assert m.health() == "QEMU was killed by SIGKILL"
