"""The kexec deploy and the restore, on a simulated host (no real host, no SSH)."""

from __future__ import annotations

import dataclasses
import struct
import sys
import time
from pathlib import Path

import pytest

from harness.errors import InfraError, UserError
from harness.hosts import cmdline, deploy, probe_parse, probe_state, wait
from harness.hosts import restore as host_restore
from harness.hosts.shell import HostShell
from harness.hosts.target import HostTarget
from harness.remote import Ran
from harness.results import Outcome
from tests.unit import hostfakes
from tests.unit.hostfakes import (
    DEFAULT_VERSION,
    TEST_VERSION,
    FakeClock,
    FakeHost,
    LocalShell,
    ScriptedShell,
)

GOLDEN = Path(__file__).parent / "golden" / "hosts"
TDX = probe_parse.parse((GOLDEN / "tdx-host.probe").read_text())
LVM = probe_parse.parse((GOLDEN / "intel-no-tdx.probe").read_text())
TARGET = HostTarget(name="tdx-1", ssh="root@tdx-1", boot_timeout_s=300)
KERNEL_ID = "5e1f6a0c9d2b47e8a3f1c0b9d8e7f6a5b4c3d2e1"


def host_probe(host: FakeHost, base: probe_state.HostProbe = TDX) -> probe_state.HostProbe:
    """The golden probe, as of the fake host's current boot."""
    return dataclasses.replace(base, boot_id=host.boot_id, systemd=host.systemd)


def kernel(tmp: Path, build_id: str | None = None) -> deploy.KernelUnderTest:
    image = tmp / "bzImage"
    image.write_bytes(b"MZ\x00kernel")
    return deploy.KernelUnderTest(image, "Linux version 7.3.4-lab (", build_id)


def notes(*entries: tuple[bytes, int, bytes]) -> bytes:
    out = b""
    for name, kind, desc in entries:
        out += struct.pack("<III", len(name), len(desc), kind)
        out += name + b"\0" * (-len(name) % 4) + desc + b"\0" * (-len(desc) % 4)
    return out


def od(data: bytes) -> str:
    """/sys/kernel/notes as `od -An -tx1 -v` prints it."""
    rows = [data[i : i + 16] for i in range(0, len(data), 16)]
    return "".join(" " + " ".join(f"{b:02x}" for b in row) + "\n" for row in rows)


# --- command line ----------------------------------------------------------------------


def test_cmdline_keeps_the_hosts_and_adds_the_labs() -> None:
    line = cmdline.kexec_cmdline(
        TDX.cmdline, ["kvm_intel.tdx=1", "loglevel=5"], run_id="20260930-100000-01111"
    )
    assert line == (
        "root=UUID=5b1f0c8e-2a4d-4c1e-9f3a-7d2e1b6c9a40 ro quiet nohibernate "
        "kvm_intel.tdx=1 loglevel=5 panic=30 gmemlab.run=20260930-100000-01111"
    )


def test_cmdline_root_rewrite_quotes_init_args_and_overrides() -> None:
    host = (
        "BOOT_IMAGE=(hd0,gpt2)/vmlinuz initrd=\\initrd.img root=LABEL=root ro panic=0 "
        'dyndbg="file kvm_main.c +p" gmemlab.run=old-run -- single'
    )
    line = cmdline.kexec_cmdline(
        host, ["panic=-1", "console=ttyS1,115200n8"], root="PARTUUID=abc", run_id=None
    )
    assert line == (
        'ro dyndbg="file kvm_main.c +p" panic=-1 console=ttyS1,115200n8 root=PARTUUID=abc '
        "rootwait -- single"
    )


@pytest.mark.parametrize("bad", ["a b", 'x="y"', ""])
def test_cmdline_refuses_words_that_are_not_one_word(bad: str) -> None:
    with pytest.raises(UserError, match="kernel parameter"):
        cmdline.kexec_cmdline("ro", [bad])


def test_split_cmdline_respects_double_quotes() -> None:
    assert cmdline.split_cmdline(' a  b="c d" e\n') == ["a", 'b="c d"', "e"]


def test_root_for() -> None:
    assert cmdline.root_for(TDX, TARGET) == "PARTUUID=9e3c1b2a-04d7-4f5e-8b6a-1c2d3e4f5a6b"
    nvme = dataclasses.replace(TDX, cmdline="root=/dev/nvme0n1p2 ro")
    assert cmdline.root_for(nvme, TARGET) is None
    with pytest.raises(UserError, match=r"set hosts\.kvm-7\.initrd: host"):
        cmdline.root_for(LVM, dataclasses.replace(TARGET, name="kvm-7"))
    host_initrd = dataclasses.replace(TARGET, initrd="host")
    assert cmdline.root_for(LVM, host_initrd) is None
    assert cmdline.initrd_for(LVM, host_initrd) == "/boot/initrd.img-7.3.4-1-amd64"
    assert cmdline.initrd_for(LVM, TARGET) is None
    with pytest.raises(UserError, match="no initramfs"):
        cmdline.initrd_for(dataclasses.replace(LVM, initrd=None), host_initrd)


# --- build id and verification -----------------------------------------------------------


def test_parse_build_id_finds_the_gnu_note() -> None:
    blob = notes(
        (b"Xen\0", 6, b"xen-3.0\0"),
        (b"GNU\0", 3, bytes.fromhex(KERNEL_ID)),
    )
    assert deploy.parse_build_id(od(blob)) == KERNEL_ID
    assert deploy.parse_build_id(od(notes((b"Linux\0", 1, b"x")))) is None
    assert deploy.parse_build_id("zz") is None
    assert deploy.parse_build_id(od(blob)[:40]) is None


def test_verify(tmp_path: Path) -> None:
    k = kernel(tmp_path, KERNEL_ID)
    good = od(notes((b"GNU\0", 3, bytes.fromhex(KERNEL_ID))))
    assert deploy.verify(k, TEST_VERSION, good)[0] is deploy.BootStatus.BOOTED
    other = od(notes((b"GNU\0", 3, b"\x01" * 20)))
    status, detail = deploy.verify(k, TEST_VERSION, other)
    assert status is deploy.BootStatus.WRONG_BUILD and "stale or wrong bzImage" in detail
    status, detail = deploy.verify(k, DEFAULT_VERSION, good)
    assert status is deploy.BootStatus.OTHER_KERNEL and "7.3.4-1-amd64" in detail
    assert deploy.verify(k, TEST_VERSION, None) == (
        deploy.BootStatus.BOOTED,
        "/proc/version matches; build id not readable on the host",
    )


# --- kexec_boot ----------------------------------------------------------------------------


def boot(
    tmp: Path,
    host: FakeHost,
    clock: FakeClock,
    target: HostTarget = TARGET,
    under_test: deploy.KernelUnderTest | None = None,
) -> tuple[deploy.Boot, HostShell | None]:
    return deploy.kexec_boot(
        host.connect(5),
        host.connect,
        host_probe(host),
        target,
        under_test or kernel(tmp),
        params=["kvm_intel.tdx=1"],
        run_id="run-1",
        clock=wait.Clock(clock.now, clock.sleep),
    )


def test_kexec_boot_runs_the_steps_in_order(tmp_path: Path) -> None:
    clock = FakeClock()
    host = FakeHost(clock)
    result, shell = boot(tmp_path, host, clock)
    assert result.status is deploy.BootStatus.BOOTED and result.outcome is None
    assert result.proc_version == TEST_VERSION and result.boot_id == "boot-2"
    assert shell is not None
    image = "/var/tmp/gmemlab/kexec.Ab12Cd/bzImage"
    cmdline = (
        "ro quiet nohibernate kvm_intel.tdx=1 "
        "root=PARTUUID=9e3c1b2a-04d7-4f5e-8b6a-1c2d3e4f5a6b rootwait panic=30 gmemlab.run=run-1"
    )
    assert result.cmdline == cmdline
    assert host.calls[:7] == [
        ["mkdir", "-p", "--", "/var/tmp/gmemlab"],
        ["mktemp", "-d", "-p", "/var/tmp/gmemlab", "kexec.XXXXXX"],
        ["<put>", "bzImage", image],
        ["/usr/sbin/kexec", "-l", image, f"--command-line={cmdline}"],
        ["rm", "-rf", "--", "/var/tmp/gmemlab/kexec.Ab12Cd"],
        ["systemctl", "--no-block", "kexec"],
        ["cat", "/proc/sys/kernel/random/boot_id", "/proc/version"],
    ]
    assert host.files[image] == b"MZ\x00kernel"
    assert 40 <= result.seconds <= 41


def test_kexec_boot_checks_the_build_id(tmp_path: Path) -> None:
    clock = FakeClock()
    host = FakeHost(clock)
    host.notes_hex = od(notes((b"GNU\0", 3, b"\x02" * 20)))
    result, _ = boot(tmp_path, host, clock, under_test=kernel(tmp_path, KERNEL_ID))
    assert result.status is deploy.BootStatus.WRONG_BUILD
    assert result.outcome is Outcome.ERROR
    assert ["od", "-An", "-tx1", "-v", "/sys/kernel/notes"] in host.calls


def test_a_panic_reboot_into_the_same_build_is_not_a_boot_of_the_test_kernel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The host's default kernel is the very build under test: only the run's marker on
    # the command line tells the kexec'd boot from the reboot that panic=30 caused.
    monkeypatch.setattr(hostfakes, "DEFAULT_VERSION", TEST_VERSION)
    clock = FakeClock()
    host = FakeHost(clock, on_kexec="panics")
    result, shell = boot(tmp_path, host, clock)
    assert host.version == TEST_VERSION and "gmemlab.run" not in host.cmdline
    assert result.status is deploy.BootStatus.OTHER_KERNEL and result.outcome is Outcome.CRASH
    assert "without gmemlab.run=run-1 on its command line" in result.detail
    got = restore(host, clock, shell, run_id="run-1")
    assert got.status == "restored" and got.detail == "on its default kernel"


def test_restore_of_the_same_build_goes_by_the_marker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hostfakes, "DEFAULT_VERSION", TEST_VERSION)
    clock = FakeClock()
    host = FakeHost(clock)
    result, shell = boot(tmp_path, host, clock)
    assert result.status is deploy.BootStatus.BOOTED
    got = restore(host, clock, shell, run_id="run-1")
    assert got.status == "restored" and got.detail == "rebooted into its default kernel"
    assert ["systemctl", "--no-block", "reboot"] in host.calls


def test_a_hung_kernel_is_a_crash_with_the_console(tmp_path: Path) -> None:
    clock = FakeClock()
    host = FakeHost(clock, on_kexec="hangs")
    console = [
        sys.executable,
        "-c",
        "import time; print('[    1.5] Kernel panic - not syncing: VFS: Unable to mount root fs',"
        " flush=True); time.sleep(60)",
    ]
    target = dataclasses.replace(TARGET, console=tuple(console))
    log = tmp_path / "cell" / "console.log"

    def slow_connect(deadline: float) -> HostShell:
        time.sleep(0.05)  # let the console command print before the deadline passes
        return host.connect(deadline)

    shell = host.connect(5)
    start = time.monotonic()
    result, new = deploy.kexec_boot(
        shell,
        slow_connect,
        host_probe(host),
        target,
        kernel(tmp_path),
        console_log=log,
        clock=wait.Clock(clock.now, clock.sleep),
    )
    assert time.monotonic() - start < 10  # the console command was stopped
    assert new is None
    assert result.status is deploy.BootStatus.NO_RETURN and result.outcome is Outcome.CRASH
    assert result.console_log == log and "Kernel panic" in log.read_text()
    assert [c.kind for c in result.crashes] == ["panic"]
    assert result.detail.startswith(
        "the test kernel did not answer SSH within 300s; console: panic"
    )
    assert result.seconds >= 300


def test_no_console_says_so(tmp_path: Path) -> None:
    clock = FakeClock()
    result, _ = boot(tmp_path, FakeHost(clock, on_kexec="hangs"), clock)
    assert result.detail.endswith("(no console command for this host)")
    assert result.console_log is None


def test_a_kernel_that_panics_and_resets_is_a_crash(tmp_path: Path) -> None:
    clock = FakeClock()
    host = FakeHost(clock, on_kexec="panics")
    result, shell = boot(tmp_path, host, clock)
    assert result.status is deploy.BootStatus.OTHER_KERNEL and result.outcome is Outcome.CRASH
    assert "came back on another kernel" in result.detail and shell is not None


def test_failed_load_names_the_reason_and_the_erratum(tmp_path: Path) -> None:
    clock = FakeClock()
    host = FakeHost(clock)
    host.kexec_fails = "kexec_load failed: Operation not supported\n"
    with pytest.raises(InfraError) as err:
        boot(tmp_path, host, clock)
    assert "kexec -l on tdx-1 failed: kexec_load failed: Operation not supported" in err.value.what
    assert "tdx_pw_mce" in (err.value.fix or "")
    assert host.calls[-1][:2] == ["rm", "-rf"]  # the staged copy is gone either way


def test_old_kernel_still_answering_is_waited_out() -> None:
    clock = FakeClock()
    host = FakeHost(clock)
    host._go(TEST_VERSION, 20.0)  # the switch: the new kernel answers in 20 s ...
    old = FakeHostShellOnOldBoot()  # ... but the old one still accepts a session
    sessions = iter([old])

    def connect(deadline: float) -> HostShell:
        return next(sessions, None) or host.connect(deadline)

    start = clock.now()
    back = wait.wait_for_boot(
        connect,
        old_boot_id="boot-1",
        deadline_s=300,
        clock=wait.Clock(clock.now, clock.sleep),
    )
    assert back is not None and back[1:] == ("boot-2", TEST_VERSION)
    assert old.closed and clock.now() - start == 20.0


class FakeHostShellOnOldBoot(ScriptedShell):
    """A session that still reaches the old kernel (boot-1)."""

    def reply(self, argv: list[str], timeout_s: float) -> Ran:
        return Ran(" ".join(argv), 0, f"boot-1\n{DEFAULT_VERSION}\n", "", 0.1)


def test_switch_without_systemd_detaches_the_jump(tmp_path: Path) -> None:
    marker = tmp_path / "jumped"
    fake_kexec = tmp_path / "kexec"
    fake_kexec.write_text(f'#!/bin/sh\n[ "$1" = -e ] && echo "$@" > {marker}\n')
    fake_kexec.chmod(0o755)
    p = dataclasses.replace(
        TDX, systemd=False, kexec=dataclasses.replace(TDX.kexec, binary=str(fake_kexec))
    )
    argv = cmdline.switch_argv(p)
    assert argv[:3] == ["sh", "-c", cmdline._DETACHED] and argv[-1] == str(fake_kexec)
    start = time.monotonic()
    ran = LocalShell().run(argv, timeout_s=10)
    assert ran.ok and time.monotonic() - start < 1.5 and not marker.exists()
    for _ in range(50):
        if marker.exists():
            break
        time.sleep(0.1)
    assert marker.read_text() == "-e\n"


# --- restore -------------------------------------------------------------------------------


def restore(
    host: FakeHost,
    clock: FakeClock,
    shell: object,
    target: HostTarget = TARGET,
    run_id: str | None = None,
) -> host_restore.Restored:
    return host_restore.restore(
        shell,  # type: ignore[arg-type]
        host.connect,
        target,
        systemd=True,
        test_version=TEST_VERSION,
        clock=wait.Clock(clock.now, clock.sleep),
        run_local=host.reset,
        run_id=run_id,
    )


def test_restore_reboots_into_the_default_kernel(tmp_path: Path) -> None:
    clock = FakeClock()
    host = FakeHost(clock)
    _, shell = boot(tmp_path, host, clock)
    got = restore(host, clock, shell)
    assert got.status == "restored" and got.proc_version == DEFAULT_VERSION
    assert ["systemctl", "--no-block", "reboot"] in host.calls
    assert host.boot_id == "boot-3"


def test_restore_never_leaves_the_test_kernel(tmp_path: Path) -> None:
    clock = FakeClock()
    host = FakeHost(clock)
    _, shell = boot(tmp_path, host, clock)
    got = restore(host, clock, shell, dataclasses.replace(TARGET, restore="never"))
    assert got.status == "skipped" and host.version == TEST_VERSION


def test_restore_after_a_panic_reset_finds_the_default_kernel(tmp_path: Path) -> None:
    clock = FakeClock()
    host = FakeHost(clock, on_kexec="panics")
    _, shell = boot(tmp_path, host, clock)
    got = restore(host, clock, shell)
    assert got.status == "restored" and got.detail == "on its default kernel"
    assert ["systemctl", "--no-block", "reboot"] not in host.calls


def test_restore_of_a_hung_host_without_reset_asks_a_person(tmp_path: Path) -> None:
    clock = FakeClock()
    host = FakeHost(clock, on_kexec="hangs")
    boot(tmp_path, host, clock)
    got = restore(host, clock, None)
    assert got.status == "failed" and "power-cycle it by hand" in got.detail


def test_restore_of_a_hung_host_uses_the_reset_command(tmp_path: Path) -> None:
    clock = FakeClock()
    host = FakeHost(clock, on_kexec="hangs")
    boot(tmp_path, host, clock)
    target = dataclasses.replace(TARGET, reset=("ipmitool", "-E", "chassis", "power", "cycle"))
    got = restore(host, clock, None, target)
    assert got.status == "restored" and got.proc_version == DEFAULT_VERSION
    assert ["<local>", "ipmitool", "-E", "chassis", "power", "cycle"] in host.calls


def test_restore_with_a_dead_session_reconnects(tmp_path: Path) -> None:
    clock = FakeClock()
    host = FakeHost(clock)
    _, shell = boot(tmp_path, host, clock)
    host.boots += 1  # the session's boot is gone (say, a crash and a fast reset) ...
    host.version = TEST_VERSION  # ... back on the test kernel (restore must reboot)
    got = restore(host, clock, shell)
    assert got.status == "restored" and got.proc_version == DEFAULT_VERSION


@pytest.mark.parametrize("status", list(deploy.BootStatus))
def test_every_boot_status_says_what_the_cell_records(status: deploy.BootStatus) -> None:
    # A status added without an outcome would fail here, not in a run on real hardware.
    outcome = deploy.Boot(status, "", 1.0, "ro").outcome
    assert (outcome is None) == (status is deploy.BootStatus.BOOTED)
