"""Real QEMU, real image, real kernel from the build stage: boot, nested KVM, panic, bad root.

Slow: builds (or reuses) the mainline lab kernel and the image, then boots three times
under whatever accelerator the probe picks (TCG on the CI machines). LAB_BZIMAGE points
at a kernel to use instead of building one.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import config, crash, image
from harness.errors import InfraError
from harness.qemu.boot import boot
from harness.qemu.machine import Machine
from harness.remote import Remote

pytestmark = pytest.mark.slow

# KVM_CREATE_VM(KVM_X86_SW_PROTECTED_VM = 1) on the guest's own /dev/kvm.
CREATE_SW_PROTECTED_VM = (
    "import fcntl, os; kvm = os.open('/dev/kvm', os.O_RDWR); "
    "vm = fcntl.ioctl(kvm, 0xAE01, 1); print('vm fd', vm); os.close(vm)"
)


@pytest.fixture(scope="module")
def lab() -> config.LabConfig:
    return config.load()


@pytest.fixture(scope="module")
def bzimage(lab: config.LabConfig) -> Path:
    given = os.environ.get("LAB_BZIMAGE")
    if given:
        return Path(given)
    from harness.build import build_kernel, prepare_request

    return Path(build_kernel(prepare_request(lab, "mainline", "lab")).bzimage)


@pytest.fixture(scope="module")
def img(lab: config.LabConfig) -> image.Image:
    return image.ensure_image(lab)


@pytest.fixture
def machine(
    lab: config.LabConfig, bzimage: Path, img: image.Image, tmp_path: Path
) -> Iterator[Machine]:
    with boot(lab, bzimage, img, tmp_path / "run", tether=True) as m:
        yield m


def remote_for(m: Machine) -> Remote:
    return Remote(m.endpoint())


def qemu_running(pid: int) -> bool:
    try:
        return b"qemu" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def test_second_image_request_reuses_the_cache(lab: config.LabConfig, img: image.Image) -> None:
    start = time.monotonic()
    again = image.ensure_image(lab)
    assert again.base_qcow2 == img.base_qcow2
    assert again.build_seconds == 0.0
    assert time.monotonic() - start < 5


def test_boot_nested_kvm_then_panic_is_caught(machine: Machine) -> None:
    assert machine.accel in ("kvm", "tcg")
    assert machine.nested, machine.nested_info.detail
    assert 0 in machine.nested_info.created
    with remote_for(machine) as remote:
        remote.connect(deadline_s=30)
        uname = remote.run(["uname", "-r"], timeout_s=30)
        assert uname.ok and uname.stdout.strip()
        made = remote.run(["python3", "-c", CREATE_SW_PROTECTED_VM], timeout_s=60)
        assert made.ok, made.stderr
        assert "vm fd" in made.stdout
        numa = remote.run(["ls", "/sys/devices/system/node/"], timeout_s=30)
        assert "node1" in numa.stdout

        # The connection dies with the kernel: run the trigger in the background.
        pid = machine.proc.pid
        trigger = threading.Thread(
            target=remote.run, args=(["sh", "-c", "echo c > /proc/sysrq-trigger"],),
            kwargs={"timeout_s": 30}, daemon=True,
        )  # fmt: skip
        start = time.monotonic()
        trigger.start()
        found = None
        while time.monotonic() - start < 30 and not found:
            found = machine.crash()
            time.sleep(0.2)
    assert found, "no crash reported within 30s"
    kinds = [c.kind for c in found]
    assert "panic" in kinds
    panic = next(c for c in found if c.kind == "panic")
    assert "sysrq triggered crash" in panic.line
    assert "sysrq triggered crash" in crash.report(found)
    # panic=-1 with -no-reboot: QEMU ends by itself.
    assert machine.wait_exit(30) is not None
    machine.stop()
    assert not qemu_running(pid)


def test_broken_root_fails_fast_with_reason_and_tail(
    lab: config.LabConfig, bzimage: Path, img: image.Image, tmp_path: Path
) -> None:
    start = time.monotonic()
    with pytest.raises(InfraError) as info:
        boot(lab, bzimage, img, tmp_path / "run", extra_cmdline=["root=/dev/vdz"])
    elapsed = time.monotonic() - start
    assert elapsed < lab.vm.boot_timeout_s
    text = info.value.message
    assert "boot failed" in text
    assert "Kernel panic - not syncing" in text
    assert "QEMU command line" in text and "root=/dev/vdz" in text
    assert "console tail" in text
    left = subprocess.run(["pgrep", "-f", str(tmp_path / "run")], capture_output=True)
    assert left.stdout == b""


def test_lab_boot_runs_a_command_like_vng(bzimage: Path, img: image.Image) -> None:
    lab_cli = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "lab"
    done = subprocess.run(
        [str(lab_cli), "boot", "--bzimage", str(bzimage), "--",
         "uname -r; echo to-stderr >&2; exit 3"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert done.stdout.strip()  # uname -r, streamed to our stdout
    assert "to-stderr" in done.stderr
    assert "lab VM up in" in done.stderr and "nested KVM yes" in done.stderr
