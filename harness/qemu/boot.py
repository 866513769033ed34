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
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from harness import crash, keys
from harness.config import LabConfig, VmSpec
from harness.errors import InfraError
from harness.image import Image
from harness.proc import require_tools, tail
from harness.qemu import accel as accel_mod
from harness.qemu import nested
from harness.qemu.argv import SSH_HOST, Launch, kernel_cmdline, qemu_argv
from harness.qemu.console import ConsoleWatch
from harness.qemu.machine import (
    CONSOLE_LOG,
    KNOWN_HOSTS,
    OVERLAY,
    POLL_S,
    QEMU_CMDLINE,
    QEMU_LOG,
    Machine,
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
    reboot: bool = False,
) -> Machine:
    """Boot bzimage on a fresh overlay of image; return once SSH works.

    tether=True makes QEMU die with the calling thread's process even on SIGKILL (use
    it from a CLI's main thread, not from worker threads, which would end QEMU early).
    reboot=True keeps QEMU running across guest reboots (see Launch.reboot).
    """
    spec = lab.vm
    require_tools(spec.qemu, "qemu-img")
    if not bzimage.is_file():
        raise InfraError(f"no kernel at {bzimage}", "build it first: `lab build`")
    run_dir.mkdir(parents=True, exist_ok=True)
    disk = run_dir / OVERLAY
    disk.unlink(missing_ok=True)
    made = subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
         "-b", str(image.base_qcow2), str(disk)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if made.returncode != 0:
        raise InfraError(
            f"cannot create the boot overlay {disk}: {made.stderr.strip()}",
            f"check the base image {image.base_qcow2} (`lab image` rebuilds a missing one)",
        )
    chosen = accel_mod.choose(spec.accel, lambda: accel_mod.cached_probe(spec.qemu, bzimage))
    cmdline = tuple(kernel_cmdline(spec, extra_cmdline))
    # A free port can be taken between our check and QEMU's bind: retry with another.
    for attempt in range(3):
        machine = _start(
            spec, chosen, bzimage, image, run_dir, disk, cmdline, tether, initrd, reboot
        )
        try:
            _wait_for_ssh(machine, spec)
            break
        except _PortTaken:
            machine.stop()
            if attempt == 2:
                raise InfraError("QEMU could not bind a forwarded SSH port three times") from None
        except BaseException:
            machine.stop()
            raise
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
    reboot: bool = False,
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
            if "could not set up host forwarding rule" in machine.qemu_output().lower():
                raise _PortTaken
            code = machine.proc.returncode
            reason = f"QEMU exited with status {code} before SSH came up"
            raise _failure(machine, reason)
        if watch.first_crash_at is None and ssh_banner(machine.ssh_port):
            machine.boot_seconds = time.monotonic() - start
            return
        if now - watch.last_output > spec.silence_timeout_s:
            raise _failure(
                machine,
                f"no console output for {spec.silence_timeout_s}s and no SSH: the guest hangs "
                "(vm.silence_timeout_s)",
            )
        if now > deadline:
            raise _failure(machine, f"no SSH within vm.boot_timeout_s = {spec.boot_timeout_s}s")
        time.sleep(POLL_S)


def _failure(machine: Machine, reason: str) -> InfraError:
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
    return InfraError("\n".join(parts), f"full console: {machine.console_log}")
