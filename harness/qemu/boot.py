"""boot(): a kernel and an image become a running QEMU VM reachable by SSH.

Every boot gets its own qcow2 overlay (the base image never changes), the serial console
in console.log from QEMU's first instant, a QMP socket, and SSH forwarded on 127.0.0.1
at a free port. boot() returns only when the guest answers SSH with the pinned host key;
otherwise it raises InfraError saying why (a crash with its lines, QEMU's exit, a
silent console, the deadline) with the QEMU command line and the console tail. Whatever
happens, including Ctrl-C, no QEMU process outlives a failed boot.
"""

from __future__ import annotations

import ctypes
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from harness import crash, interrupt, keys
from harness.config import LabConfig, VmSpec
from harness.errors import InfraError
from harness.image import Image
from harness.paths import cache_dir
from harness.proc import pid_alive, require_tools, tail
from harness.qemu import accel as accel_mod
from harness.qemu import nested
from harness.qemu.argv import SSH_HOST, Launch, kernel_cmdline, qemu_argv
from harness.qemu.console import ConsoleWatch
from harness.qemu.machine import (
    CONSOLE_LOG,
    KNOWN_HOSTS,
    POLL_S,
    QEMU_CMDLINE,
    QEMU_LOG,
    Machine,
    discard_overlay,
    exit_text,
    qmp_socket_path,
)

# After the first crash line, keep reading this long so the report has the whole splat.
CRASH_SETTLE_S = 1.5


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (QEMU binds it moments later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((SSH_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def ssh_banner(port: int, timeout: float = 1.0) -> bool:
    """True once the guest's sshd answers (QEMU's user-net accepts before it does)."""
    try:
        with socket.create_connection((SSH_HOST, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def boot(
    lab: LabConfig,
    bzimage: Path,
    image: Image,
    run_dir: Path,
    *,
    extra_cmdline: Sequence[str] = (),
    tether: bool = False,
    probe_nested: bool = True,
    initrd: Path | None = None,
    network: bool = False,
    on_retry: Callable[[str], None] | None = None,
    reboot: bool = False,
) -> Machine:
    """Boot bzimage on a fresh overlay of image; return once SSH works.

    tether=True makes QEMU die with the calling thread's process even on SIGKILL (use
    it from a CLI's main thread, not from worker threads, which would end QEMU early).
    network=True lets the guest reach the network (else restricted to its SSH forward).

    A boot that fails because QEMU itself failed (it aborted on an assertion, died of a
    signal of its own, or the guest went silent before its init without a crash on the
    console) is retried once, on a fresh overlay; on_retry is told why, and the
    Machine keeps the reason (its summary, environment and machine.json say it). The
    first attempt's console and QEMU output are kept beside the new ones (-attempt1).
    A kernel crash is the kernel's: never retried.
    reboot=True keeps QEMU running across guest reboots (see Launch.reboot).
    """
    spec = lab.vm
    require_tools(spec.qemu, "qemu-img")
    if not bzimage.is_file():
        raise InfraError(f"no kernel at {bzimage}", "build it first: `lab build`")
    run_dir.mkdir(parents=True, exist_ok=True)
    discard_overlay(run_dir)  # an overlay a lab before this one left in the run folder
    chosen = accel_mod.choose(spec.accel, lambda: accel_mod.cached_probe(spec.qemu, bzimage))
    cmdline = tuple(kernel_cmdline(spec, extra_cmdline, chosen.name))
    retried: list[str] = []
    ports_taken = 0
    while True:
        interrupt.check()
        disk = new_overlay(image)
        try:
            machine = _start(
                spec, chosen, bzimage, image, run_dir, disk, cmdline, tether, initrd, network,
                reboot,
            )  # fmt: skip
            try:
                _wait_for_ssh(machine, spec)
                break
            except _PortTaken:
                # A free port can be taken between our check and QEMU's bind.
                machine.stop()
                ports_taken += 1
                if ports_taken == 3:
                    raise InfraError(
                        "QEMU could not bind a forwarded SSH port three times"
                    ) from None
            except BootFailure as exc:
                machine.stop()
                if exc.qemu_fault is None or retried:
                    raise
                retried.append(exc.qemu_fault)
                keep_attempt(run_dir, len(retried))
                if on_retry is not None:
                    on_retry(exc.qemu_fault)
            except BaseException:
                machine.stop()
                raise
        finally:
            # QEMU holds the overlay open while it runs; the name goes now, the space
            # when QEMU ends, however it ends (even if the lab is SIGKILLed).
            disk.unlink(missing_ok=True)
    machine.retries = tuple(retried)
    try:
        if probe_nested:
            machine.learn_nested(wait_s=nested.console_wait_s(spec.init))
        machine.save_info()
    except BaseException:
        machine.stop()
        raise
    return machine


class _PortTaken(Exception):
    pass


class BootFailure(InfraError):
    """A boot that did not reach SSH. qemu_fault says why when QEMU itself failed (not
    the kernel): such a boot is worth one more try."""

    def __init__(self, what: str, fix: str | None = None, qemu_fault: str | None = None):
        super().__init__(what, fix)
        self.qemu_fault = qemu_fault


# QEMU's own crashes (not a person's or the OOM killer's SIGKILL/SIGTERM).
QEMU_FAULT_SIGNALS = frozenset(
    {signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE}
)
# What QEMU prints when it fails by itself, e.g. QEMU 10.0.2 under TCG:
# "qemu-system-x86_64: ../../system/physmem.c:2617: iotlb_to_section: Assertion `...' failed."
QEMU_FAULT_TEXT = re.compile(
    r"Assertion .* failed|assertion failed|tcg fatal error|qemu: fatal:|core dumped"
    r"|qemu: uncaught target signal|Segmentation fault|Bus error",
    re.IGNORECASE,
)


def qemu_fault(code: int | None, qemu_output: str) -> str | None:
    """Why a QEMU that ended during boot failed by itself, or None (it did not: it was
    killed by a person, or exited on a bad option or file, which a retry won't fix)."""
    line = next((ln.strip() for ln in qemu_output.splitlines() if QEMU_FAULT_TEXT.search(ln)), None)
    by_signal = code is not None and code < 0 and -code in QEMU_FAULT_SIGNALS
    if not by_signal and line is None:
        return None
    return f"{exit_text(code)}: {line[:200]}" if line else exit_text(code)


def new_overlay(image: Image) -> Path:
    """A fresh qcow2 overlay over the base image, in the cache (not the results folder:
    its growth on a full results disk would pause the guest; it is scratch, not a
    result). Overlays left by labs that died before unlinking theirs are removed."""
    folder = cache_dir("overlays")
    for old in folder.glob("*.qcow2"):
        pid = old.name.split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            old.unlink(missing_ok=True)
    disk = folder / f"{os.getpid()}-{secrets.token_hex(4)}.qcow2"
    made = subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
         "-b", str(image.base_qcow2), str(disk)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if made.returncode != 0:
        disk.unlink(missing_ok=True)
        raise InfraError(
            f"cannot create the boot overlay {disk}: {made.stderr.strip()}",
            f"check the base image {image.base_qcow2} (`lab image` rebuilds a missing one)"
            " and free space in the cache (df -h)",
        )
    return disk


def keep_attempt(run_dir: Path, n: int) -> None:
    """Keep a failed attempt's console and QEMU output as *-attemptN.log."""
    for name in (CONSOLE_LOG, QEMU_LOG):
        path = run_dir / name
        if path.exists():
            path.rename(run_dir / f"{path.stem}-attempt{n}{path.suffix}")


def _start(
    spec: VmSpec,
    chosen: accel_mod.Accel,
    bzimage: Path,
    image: Image,
    run_dir: Path,
    disk: Path,
    cmdline: tuple[str, ...],
    tether: bool,
    initrd: Path | None,
    network: bool,
    reboot: bool,
) -> Machine:
    console = run_dir / CONSOLE_LOG
    console.unlink(missing_ok=True)
    qmp_socket = qmp_socket_path(run_dir)
    qmp_socket.unlink(missing_ok=True)
    port = free_port()
    launch = Launch(
        vm=spec,
        accel=chosen,
        bzimage=bzimage,
        disk=disk,
        console=console,
        qmp_socket=qmp_socket,
        ssh_port=port,
        cmdline=cmdline,
        initrd=initrd,
        network=network,
        reboot=reboot,
    )
    argv = qemu_argv(launch)
    (run_dir / QEMU_CMDLINE).write_text(shlex.join(argv) + "\n")
    keys.write_known_hosts(run_dir / KNOWN_HOSTS, SSH_HOST, port, image.host_key_line)
    with (run_dir / QEMU_LOG).open("wb") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            preexec_fn=_die_with_parent if tether else None,
        )
    return Machine(proc=proc, image=image, run_dir=run_dir, launch=launch, qemu_argv=argv)


def _die_with_parent() -> None:
    # prctl(PR_SET_PDEATHSIG, SIGKILL): QEMU dies with the lab even if the lab is
    # SIGKILLed. Linux ties it to the forking thread, hence "main thread only".
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)


def _wait_for_ssh(machine: Machine, spec: VmSpec) -> None:
    start = time.monotonic()
    deadline = start + spec.boot_timeout_s
    watch = ConsoleWatch(machine.console_log)
    while True:
        watch.poll()
        now = time.monotonic()
        if watch.first_crash_at is not None and (
            now - watch.first_crash_at >= CRASH_SETTLE_S or not machine.alive()
        ):
            raise _failure(machine, "the kernel crashed while booting")
        if not machine.alive():
            output = machine.qemu_output()
            if "could not set up host forwarding rule" in output.lower():
                raise _PortTaken
            code = machine.proc.returncode
            reason = f"{exit_text(code)} before SSH came up"
            raise _failure(machine, reason, qemu_fault(code, output))
        interrupt.check()
        if watch.first_crash_at is None and ssh_banner(machine.ssh_port):
            machine.boot_seconds = time.monotonic() - start
            return
        if now - watch.last_output > spec.silence_timeout_s:
            # No crash on the console (that is checked first): QEMU or its emulation
            # stalled before the guest's init came up (seen under loaded TCG).
            silent = f"no console output for {spec.silence_timeout_s}s and no SSH"
            raise _failure(
                machine,
                f"{silent}: the guest hangs (vm.silence_timeout_s)",
                f"{silent}, no crash on the console",
            )
        if now > deadline:
            raise _failure(machine, f"no SSH within vm.boot_timeout_s = {spec.boot_timeout_s}s")
        time.sleep(POLL_S)


def _failure(machine: Machine, reason: str, fault: str | None = None) -> BootFailure:
    """Stop QEMU and describe the failed boot: why, crash lines, command line, tails."""
    machine.stop()
    parts = [f"boot failed: {reason}"]
    found = crash.scan(machine.console_text())
    if found:
        parts.append(crash.report(found))
    parts.append(f"QEMU command line ({machine.run_dir / QEMU_CMDLINE}):")
    parts.append("    " + shlex.join(machine.qemu_argv))
    parts.append(f"console tail ({machine.console_log}):")
    parts.append(tail(machine.console_log, 25))
    if machine.qemu_output().strip():
        parts.append(f"QEMU's own output ({machine.qemu_log}):")
        parts.append(tail(machine.qemu_log, 10))
    return BootFailure("\n".join(parts), f"full console: {machine.console_log}", fault)
