"""Deploy a built kernel to a host by kexec, and check it is the one built.

Every step is a remote command from an argv list (harness.remote quotes each word):

1. stage:   mktemp -d under the host's workdir, put bzImage there (SFTP)
2. load:    kexec -l <bzImage> --command-line=<host's cmdline, without BOOT_IMAGE= and
            initrd=, plus the host's and the lab's parameters, panic=30 and the
            gmemlab.run=<run id> marker of harness/hosts/lock.py> [--initrd=...]
3. switch:  systemctl --no-block kexec (or a detached `kexec -e` without systemd): the
            SSH session dropping is the expected end of this command
4. wait:    new sessions until one answers with a boot id other than the old one, or the
            boot deadline passes (short connect timeouts, a poll in between)
5. verify:  /proc/version contains the build's expected string, and where a build id is
            given, /sys/kernel/notes carries it

A kernel that does not answer in time, or a host that comes back on another kernel (a
panic with panic=30 reboots into the default one), is a boot failure: the cell's
outcome is `crash`, with whatever the console command captured.

The command line and the switch argv come from cmdline.py, the waiting from wait.py;
restore.py brings the host back on its default kernel afterwards.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from harness import crash
from harness.errors import InfraError
from harness.hosts.capabilities import TDX_ERRATUM_NOTE
from harness.hosts.cmdline import (
    has_marker,
    initrd_for,
    kexec_cmdline,
    root_for,
    run_marker,
    switch_argv,
)
from harness.hosts.console import ConsoleCapture
from harness.hosts.probe_state import HostProbe
from harness.hosts.shell import Connector, HostShell
from harness.hosts.target import HostTarget
from harness.hosts.wait import REAL_CLOCK, Clock, wait_for_boot
from harness.results import Outcome


@dataclass(frozen=True)
class KernelUnderTest:
    bzimage: Path
    # What /proc/version must contain, e.g. "Linux version 7.3.4-lab+ (" or the build's
    # whole banner from its manifest.
    expect_version: str
    # The GNU build id of its vmlinux (hex), checked against /sys/kernel/notes.
    build_id: str | None = None


class BootStatus(StrEnum):
    BOOTED = "booted"
    # No SSH within the boot deadline: hung, panicked without reboot, or no network.
    NO_RETURN = "no-return"
    # Came back, but on another kernel: the test kernel died and the host reset.
    OTHER_KERNEL = "other-kernel"
    # The expected version string, but a different build id: a stale or wrong image.
    WRONG_BUILD = "wrong-build"


# What the cell records for each: a kernel that did not come back as itself crashed;
# a wrong image is the lab's mistake (an error), not a finding about the kernel.
_OUTCOME: dict[BootStatus, Outcome | None] = {
    BootStatus.BOOTED: None,
    BootStatus.NO_RETURN: Outcome.CRASH,
    BootStatus.OTHER_KERNEL: Outcome.CRASH,
    BootStatus.WRONG_BUILD: Outcome.ERROR,
}


@dataclass(frozen=True)
class Boot:
    status: BootStatus
    detail: str
    seconds: float
    cmdline: str
    proc_version: str = ""
    boot_id: str = ""
    console_log: Path | None = None
    crashes: tuple[crash.Crash, ...] = ()

    @property
    def outcome(self) -> Outcome | None:
        """None when booted; else what the cell records."""
        return _OUTCOME[self.status]


# --- is it the kernel built? --------------------------------------------------------


def parse_build_id(od_hex: str) -> str | None:
    """The GNU build id in /sys/kernel/notes, given as `od -An -tx1 -v` prints it."""
    try:
        data = bytes.fromhex("".join(od_hex.split()))
    except ValueError:
        return None
    offset = 0
    while offset + 12 <= len(data):
        namesz, descsz, kind = struct.unpack_from("<III", data, offset)
        name_at = offset + 12
        desc_at = name_at + (namesz + 3) // 4 * 4
        end = desc_at + (descsz + 3) // 4 * 4
        if end > len(data):
            return None
        if kind == 3 and data[name_at : name_at + namesz] == b"GNU\0":  # NT_GNU_BUILD_ID
            return data[desc_at : desc_at + descsz].hex()
        offset = end
    return None


def verify(
    kernel: KernelUnderTest,
    proc_version: str,
    notes_hex: str | None,
    *,
    cmdline: str | None = None,
    run_id: str | None = None,
) -> tuple[BootStatus, str]:
    """Is the running kernel the one built? (status, what was checked or found).

    With run_id and the running kernel's cmdline, a boot without the run's marker is
    another boot even when it is the same build: the host's default kernel may be the
    very kernel under test, and a panic=30 reboot would otherwise pass for it."""
    if kernel.expect_version not in proc_version:
        return (
            BootStatus.OTHER_KERNEL,
            f"the host came back on another kernel ({proc_version.strip()}), not the test "
            f"kernel: it did not boot or did not stay up (panic=, watchdog or a reset)",
        )
    if run_id is not None and cmdline is not None and not has_marker(cmdline, run_id):
        return (
            BootStatus.OTHER_KERNEL,
            f"the host came back without {run_marker(run_id)} on its command line: it "
            "rebooted (panic=, watchdog or a reset) instead of running the kexec'd kernel",
        )
    if kernel.build_id is None:
        return BootStatus.BOOTED, "/proc/version matches"
    running = parse_build_id(notes_hex) if notes_hex else None
    if running is None:
        return BootStatus.BOOTED, "/proc/version matches; build id not readable on the host"
    if running != kernel.build_id.lower():
        return (
            BootStatus.WRONG_BUILD,
            f"/proc/version matches but the build id differs ({running} running, "
            f"{kernel.build_id} built): a stale or wrong bzImage was deployed",
        )
    return BootStatus.BOOTED, f"/proc/version and build id {running[:12]} match"


# --- remote steps ----------------------------------------------------------------------


def _check(ran_ok: bool, what: str, detail: str, fix: str) -> None:
    if not ran_ok:
        raise InfraError(f"{what} failed: {detail}", fix)


def stage(shell: HostShell, bzimage: Path, workdir: str) -> str:
    """Copy bzImage into a new temporary folder under workdir; its path there."""
    made = shell.run(["mkdir", "-p", "--", workdir], timeout_s=30)
    _check(made.ok, f"creating {workdir} on the host", made.stderr.strip() or made.error, "")
    ran = shell.run(["mktemp", "-d", "-p", workdir, "kexec.XXXXXX"], timeout_s=30)
    folder = ran.stdout.strip()
    _check(
        ran.ok and folder.startswith("/"),
        f"creating a folder in {workdir} on the host",
        ran.stderr.strip() or ran.error or repr(ran.stdout),
        "check the host's workdir and free space",
    )
    remote = f"{folder}/bzImage"
    shell.put(bzimage, remote)
    return remote


def load(shell: HostShell, probe: HostProbe, image: str, cmdline: str, initrd: str | None) -> None:
    """kexec -l the staged image, then drop the staged copy (the kernel holds it)."""
    argv = [probe.kexec.binary or "kexec", "-l", image, f"--command-line={cmdline}"]
    if initrd is not None:
        argv.append(f"--initrd={initrd}")
    ran = shell.run(argv, timeout_s=120)
    shell.run(["rm", "-rf", "--", image.rsplit("/", 1)[0]], timeout_s=30)
    if not ran.ok:
        why = (ran.stderr or ran.stdout).strip()[-400:] or ran.error or f"exit {ran.exit_code}"
        fix = "run the kexec -l above on the host by hand to see why"
        if "tdx_pw_mce" in probe.bugs:
            fix = f"{TDX_ERRATUM_NOTE}; {fix}"
        raise InfraError(f"kexec -l on {probe.hostname} failed: {why}", fix)


def switch(shell: HostShell, probe: HostProbe) -> None:
    """Jump into the loaded kernel; losing the session here is the expected end."""
    ran = shell.run(switch_argv(probe), timeout_s=60)
    shell.close()
    if ran.lost or ran.timed_out:
        return
    if ran.exit_code != 0:
        raise InfraError(
            f"switching {probe.hostname} to the loaded kernel failed: "
            f"{(ran.stderr or ran.stdout).strip()[-300:]}",
            "run `systemctl kexec` on the host by hand to see why",
        )


def read_notes(shell: HostShell) -> str | None:
    ran = shell.run(["od", "-An", "-tx1", "-v", "/sys/kernel/notes"], timeout_s=30)
    return ran.stdout if ran.ok else None


def read_cmdline(shell: HostShell) -> str | None:
    ran = shell.run(["cat", "/proc/cmdline"], timeout_s=30)
    return ran.stdout.strip() if ran.ok else None


def kexec_boot(
    shell: HostShell,
    connect: Connector,
    probe: HostProbe,
    target: HostTarget,
    kernel: KernelUnderTest,
    *,
    params: Sequence[str] = (),
    run_id: str | None = None,
    console_log: Path | None = None,
    clock: Clock = REAL_CLOCK,
) -> tuple[Boot, HostShell | None]:
    """Steps 1-5 above. The Boot and, when it booted (or came back on some kernel), a
    session to the host; shell is closed either way."""
    start = clock.now()
    cmdline = kexec_cmdline(
        probe.cmdline,
        [*target.cmdline_extra, *params],
        root=root_for(probe, target),
        run_id=run_id,
    )
    initrd = initrd_for(probe, target)
    image = stage(shell, kernel.bzimage, target.workdir)
    load(shell, probe, image, cmdline, initrd)
    console = None
    if target.console and console_log is not None:
        console = ConsoleCapture(target.console, console_log, what=f"hosts.{target.name}.console")
        console.start()
    try:
        switch(shell, probe)
        back = wait_for_boot(
            connect, old_boot_id=probe.boot_id, deadline_s=target.boot_timeout_s, clock=clock
        )
    finally:
        if console is not None:
            console.stop()
    log = console.log if console is not None else None
    crashes = tuple(crash.scan(console.text())) if console is not None else ()
    seconds = clock.now() - start
    if back is None:
        first = next((c for c in crashes if c.kind in crash.FATAL_KINDS), None)
        seen = f"; console: {first.describe()}" if first else ""
        where = "" if log is not None else " (no console command for this host)"
        return (
            Boot(
                BootStatus.NO_RETURN,
                f"the test kernel did not answer SSH within {target.boot_timeout_s:.0f}s"
                f"{seen}{where}",
                seconds,
                cmdline,
                console_log=log,
                crashes=crashes,
            ),
            None,
        )
    new_shell, boot_id, version = back
    notes = read_notes(new_shell) if kernel.build_id else None
    running = read_cmdline(new_shell) if run_id is not None else None
    status, detail = verify(kernel, version, notes, cmdline=running, run_id=run_id)
    return (
        Boot(status, detail, seconds, cmdline, version, boot_id, log, crashes),
        new_shell,
    )
