"""Deploy a built kernel to a host by kexec, check it is the one built, and restore.

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

restore: reboot into the host's default kernel (systemctl --no-block reboot), wait until
it answers on a kernel that is not the test kernel; an unreachable host is reset with
the optional reset command first. `restore: never` leaves the test kernel running.
"""

from __future__ import annotations

import re
import struct
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Literal

from harness import crash
from harness.errors import InfraError, UserError
from harness.hosts import lock as hlock
from harness.hosts.capabilities import TDX_ERRATUM_NOTE
from harness.hosts.console import ConsoleCapture
from harness.hosts.probe_state import HostProbe
from harness.hosts.shell import Connector, HostShell, NotReachable
from harness.hosts.target import HostTarget
from harness.results import Outcome

DEFAULT_PANIC_S = 30
_BOOT_FACTS = ["cat", "/proc/sys/kernel/random/boot_id", "/proc/version"]
# Runs "$@" detached from the SSH session (which the switch is about to end).
_DETACHED = 'setsid "$@" </dev/null >/dev/null 2>&1 &'
# Root device forms the kernel resolves without an initramfs.
_ROOT_WITHOUT_INITRD = re.compile(r"^(PARTUUID=|PARTLABEL=|/dev/(sd|vd|hd|xvd|nvme|mmcblk))")
_DROPPED = ("BOOT_IMAGE", "initrd", hlock.RUN_MARKER)


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
        if self.status is BootStatus.BOOTED:
            return None
        if self.status is BootStatus.WRONG_BUILD:
            return Outcome.ERROR
        return Outcome.CRASH


@dataclass(frozen=True)
class Restored:
    status: Literal["restored", "skipped", "failed"]
    detail: str
    seconds: float = 0.0
    proc_version: str = ""


@dataclass(frozen=True)
class Clock:
    """Time, injectable for tests."""

    now: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


REAL_CLOCK = Clock()


# --- pure pieces -------------------------------------------------------------------------


def split_cmdline(text: str) -> list[str]:
    """Kernel command-line words: split at blanks, except inside double quotes."""
    words: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text.strip():
        if ch == '"':
            quoted = not quoted
        if ch.isspace() and not quoted:
            if current:
                words.append("".join(current))
                current = []
            continue
        current.append(ch)
    if current:
        words.append("".join(current))
    return words


def _key(word: str) -> str:
    return word.split("=", 1)[0]


def kexec_cmdline(
    host_cmdline: str,
    params: Sequence[str],
    *,
    root: str | None = None,
    run_id: str | None = None,
    panic_s: int | None = DEFAULT_PANIC_S,
) -> str:
    """The test kernel's command line: the host's own, minus the boot loader's words
    (BOOT_IMAGE=, initrd=) and any earlier marker, with params replacing host words of
    the same key, then panic=, the run marker, and the init arguments after `--`."""
    for word in params:
        if not word or any(c.isspace() or c == '"' for c in word):
            raise UserError(
                f"kernel parameter {word!r} is empty or holds a blank or a quote",
                "give each kernel parameter as one word in lab.yaml",
            )
    words = split_cmdline(host_cmdline)
    init: list[str] = []
    if "--" in words:
        cut = words.index("--")
        words, init = words[:cut], words[cut:]
    extra = list(params)
    if root is not None:
        extra = [w for w in extra if _key(w) != "root"] + [f"root={root}"]
        if "rootwait" not in words and "rootwait" not in extra:
            extra.append("rootwait")
    if panic_s is not None and "panic" not in {_key(w) for w in extra}:
        extra.append(f"panic={panic_s}")
    if run_id is not None:
        extra.append(f"{hlock.RUN_MARKER}={run_id}")
    replaced = {_key(w) for w in extra} | set(_DROPPED)
    kept = [w for w in words if _key(w) not in replaced]
    return " ".join(kept + extra + init)


def root_for(probe: HostProbe, target: HostTarget) -> str | None:
    """A root= the test kernel can mount without an initramfs, or None to keep the
    host's. UserError when there is none and the host's root needs its initramfs."""
    if target.initrd == "host":
        return None
    host_root = next((w[5:] for w in split_cmdline(probe.cmdline) if w.startswith("root=")), "")
    if _ROOT_WITHOUT_INITRD.match(host_root):
        return None
    if probe.root_partuuid:
        return f"PARTUUID={probe.root_partuuid}"
    raise UserError(
        f"hosts.{target.name}: the host's root (root={host_root or '?'}, "
        f"{probe.root_source or 'unknown device'}) needs an initramfs to be found",
        f"set hosts.{target.name}.initrd: host to boot the test kernel with the host's own",
    )


def initrd_for(probe: HostProbe, target: HostTarget) -> str | None:
    if target.initrd == "none":
        return None
    if probe.initrd is None:
        raise UserError(
            f"hosts.{target.name}.initrd is host, but no initramfs of {probe.release} was "
            "found under /boot",
            "use initrd: none (root by PARTUUID) or install the host's initramfs",
        )
    return probe.initrd


def switch_argv(probe: HostProbe) -> list[str]:
    """The command that jumps into the loaded kernel; it ends this SSH session."""
    if probe.systemd:
        return ["systemctl", "--no-block", "kexec"]
    kexec = probe.kexec.binary or "kexec"
    return ["sh", "-c", _DETACHED, "gmemlab-switch", "sh", "-c", 'sleep 2; exec "$0" -e', kexec]


def reboot_argv(systemd: bool) -> list[str]:
    if systemd:
        return ["systemctl", "--no-block", "reboot"]
    return ["sh", "-c", _DETACHED, "gmemlab-reboot", "sh", "-c", "sleep 2; exec reboot"]


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
    kernel: KernelUnderTest, proc_version: str, notes_hex: str | None
) -> tuple[BootStatus, str]:
    """Is the running kernel the one built? (status, what was checked or found)."""
    if kernel.expect_version not in proc_version:
        return (
            BootStatus.OTHER_KERNEL,
            f"the host came back on another kernel ({proc_version.strip()}), not the test "
            f"kernel: it did not boot or did not stay up (panic=, watchdog or a reset)",
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


def wait_for_boot(
    connect: Connector,
    *,
    old_boot_id: str,
    deadline_s: float,
    poll_s: float = 5.0,
    attempt_s: float = 30.0,
    clock: Clock = REAL_CLOCK,
) -> tuple[HostShell, str, str] | None:
    """A session to the host once it runs a boot other than old_boot_id, with its boot
    id and /proc/version; None when the deadline passes first."""
    end = clock.now() + deadline_s
    while (left := end - clock.now()) > 0:
        try:
            shell = connect(min(left, attempt_s))
        except NotReachable:
            continue
        facts = _facts(shell)
        if facts is not None and facts[0] != old_boot_id:
            return shell, *facts
        # The old kernel is still shutting down, or the new one is half up.
        shell.close()
        clock.sleep(min(poll_s, max(0.0, end - clock.now())))
    return None


def read_notes(shell: HostShell) -> str | None:
    ran = shell.run(["od", "-An", "-tx1", "-v", "/sys/kernel/notes"], timeout_s=30)
    return ran.stdout if ran.ok else None


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
    poll_s: float = 5.0,
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
            connect,
            old_boot_id=probe.boot_id,
            deadline_s=target.boot_timeout_s,
            poll_s=poll_s,
            clock=clock,
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
    status, detail = verify(kernel, version, notes)
    return (
        Boot(status, detail, seconds, cmdline, version, boot_id, log, crashes),
        new_shell,
    )


def restore(
    shell: HostShell | None,
    connect: Connector,
    target: HostTarget,
    *,
    systemd: bool,
    test_version: str,
    deadline_s: float | None = None,
    clock: Clock = REAL_CLOCK,
    poll_s: float = 5.0,
    run_local: Callable[[Sequence[str]], int] | None = None,
) -> Restored:
    """Bring the host back on its default kernel (one whose /proc/version does not
    contain test_version). Says what happened; raises only for a broken reset command."""
    if target.restore == "never":
        return Restored("skipped", f"restore: never, {target.name} stays on the test kernel")
    deadline = deadline_s if deadline_s is not None else target.boot_timeout_s
    start = clock.now()

    def failed(detail: str) -> Restored:
        return Restored("failed", detail, clock.now() - start)

    facts = _facts(shell) if shell is not None else None
    if shell is not None and facts is not None:
        live, (boot_id, version) = shell, facts
    else:
        # The session died (a crash, a hang): reach the host anew, or reset it.
        if shell is not None:
            shell.close()
        back = wait_for_boot(connect, old_boot_id="", deadline_s=min(60.0, deadline), clock=clock)
        if back is None:
            if not target.reset:
                return failed(
                    f"{target.name} does not answer and has no reset command: power-cycle "
                    "it by hand (it boots its default kernel)"
                )
            code = (run_local or _run_local)(target.reset)
            back = wait_for_boot(
                connect, old_boot_id="", deadline_s=deadline, poll_s=poll_s, clock=clock
            )
            if back is None:
                return failed(
                    f"{target.name} did not answer within {deadline:.0f}s of its reset "
                    f"command (exit {code})"
                )
        live, boot_id, version = back
    if test_version not in version:
        live.close()
        return Restored("restored", "on its default kernel", clock.now() - start, version)
    ran = live.run(reboot_argv(systemd), timeout_s=60)
    live.close()
    if not (ran.ok or ran.lost or ran.timed_out):
        return failed(f"reboot failed: {(ran.stderr or ran.stdout).strip()[-300:]}")
    back = wait_for_boot(
        connect, old_boot_id=boot_id, deadline_s=deadline, poll_s=poll_s, clock=clock
    )
    if back is None:
        return failed(f"{target.name} did not answer within {deadline:.0f}s of its reboot")
    back[0].close()
    version = back[2]
    if test_version in version:
        return Restored(
            "failed",
            f"{target.name} came back on the test kernel ({version})",
            clock.now() - start,
            version,
        )
    return Restored("restored", "rebooted into its default kernel", clock.now() - start, version)


def _facts(shell: HostShell) -> tuple[str, str] | None:
    """(boot id, /proc/version) of a live session, None when it is dead."""
    ran = shell.run(_BOOT_FACTS, timeout_s=30)
    lines = ran.stdout.splitlines()
    if ran.ok and len(lines) >= 2:
        return lines[0].strip(), lines[1].strip()
    return None


def _run_local(argv: Sequence[str]) -> int:
    try:
        return subprocess.run(
            list(argv), stdin=subprocess.DEVNULL, timeout=120, check=False
        ).returncode
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InfraError(f"reset command {argv[0]!r} failed: {exc}", "fix hosts.*.reset") from None
