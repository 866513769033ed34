"""A running lab VM: its files, its lifecycle, and the one way to reach it over SSH.

Leaving a Machine (its `with`, or stop()) always ends QEMU: QMP quit first, then the
whole process group killed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType

from harness import crash
from harness.image import Image
from harness.proc import kill_group
from harness.qemu import nested, qmp
from harness.qemu.argv import SSH_HOST, Launch
from harness.qemu.version import version_line
from harness.remote import Endpoint

# A boot's files in its run folder. The overlay (the throwaway copy-on-write disk over
# the base image) and the QMP socket are not results: they are removed after the boot.
OVERLAY = "disk.qcow2"
QMP_SOCKET = "qmp.sock"
CONSOLE_LOG = "console.log"
QEMU_LOG = "qemu.log"
QEMU_CMDLINE = "qemu-cmdline.txt"
KNOWN_HOSTS = "known_hosts"
POLL_S = 0.2
STOP_GRACE_S = 3.0
# sockaddr_un.sun_path holds 108 bytes; QEMU refuses longer socket paths.
UNIX_PATH_MAX = 107


def qmp_socket_path(run_dir: Path) -> Path:
    """run_dir/qmp.sock, or, when that path is too long for a unix socket, a socket in
    a fresh short folder under /tmp (removed when the machine stops)."""
    path = run_dir / QMP_SOCKET
    if len(os.fsencode(path)) <= UNIX_PATH_MAX:
        return path
    return Path(tempfile.mkdtemp(prefix="gmemlab-qmp-", dir="/tmp")) / QMP_SOCKET


def discard_overlay(run_dir: Path) -> None:
    # The overlay only held one boot's guest writes; console.log etc. stay.
    (run_dir / OVERLAY).unlink(missing_ok=True)


# What a QMP run state other than "running" means for a run, to say in its reason.
_STATE_HINTS = {
    "io-error": "a disk write failed (is the file system holding the disk overlay full?)",
    "paused": "paused (a QMP `stop`, a debugger, or SIGSTOP)",
    "internal-error": "QEMU hit an internal error emulating the guest",
    "guest-panicked": "the guest kernel panicked",
    "shutdown": "the guest shut down",
}


def exit_text(code: int | None) -> str:
    """How QEMU ended, for a person: a signal by name ("killed by SIGKILL")."""
    if code is None:
        return "QEMU is still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"QEMU was killed by {name}"
    return f"QEMU exited with status {code}"


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


@dataclass(frozen=True)
class MachineInfo:
    """The facts about a boot, saved as run_dir/machine.json for the report."""

    accel: str
    accel_reason: str
    cpu_model: str
    ssh_port: int
    boot_seconds: float
    nested: bool
    nested_present: bool
    vm_types: tuple[int, ...]
    vm_types_created: tuple[int, ...]
    guest_cpu: str
    nested_detail: str
    qemu_pid: int
    # Why an earlier attempt failed when QEMU itself failed during boot (retried once).
    boot_retries: tuple[str, ...] = ()


class Machine:
    """A booted VM. Use as a context manager: leaving it always ends QEMU."""

    def __init__(
        self,
        *,
        proc: subprocess.Popen[bytes],
        image: Image,
        run_dir: Path,
        launch: Launch,
        qemu_argv: list[str],
    ) -> None:
        self.proc = proc
        self.image = image
        self.run_dir = run_dir
        self.ssh_host = SSH_HOST
        self.ssh_port = launch.ssh_port
        self.user = image.user
        self.console_log = run_dir / CONSOLE_LOG
        self.qemu_log = run_dir / QEMU_LOG
        self.qmp_socket = launch.qmp_socket
        self.accel = launch.accel.name
        self.accel_reason = launch.accel.reason
        self.cpu_model = launch.accel.cpu_model
        self.qemu_argv = qemu_argv
        self.boot_seconds = 0.0
        self.nested = False
        self.nested_info = nested.NOT_PROBED
        self.known_hosts = run_dir / KNOWN_HOSTS
        # The throwaway disk (unlinked once QEMU holds it open; see boot.new_overlay).
        self.overlay = launch.disk
        # Why earlier boot attempts failed, when QEMU itself failed (boot retries once).
        self.retries: tuple[str, ...] = ()
        self._stopped = False

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_exit(self, timeout: float) -> int | None:
        """QEMU's exit status, or None if it is still running after timeout."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def health(self) -> str | None:
        """None while the guest runs; else why it no longer can: QEMU ended (how), or
        QEMU stopped the vCPUs (QMP query-status: io-error on a full disk, paused).

        A QMP socket that does not answer says nothing either way (None): the SSH
        side's liveness check covers a wedged QEMU."""
        if not self.alive():
            return exit_text(self.proc.returncode)
        try:
            state = qmp.query_status(self.qmp_socket)
        except qmp.QmpError:
            return None
        if state == "running":
            return None
        hint = _STATE_HINTS.get(state, "the guest is not running")
        if state == "io-error":
            hint += f" (the overlay is in {self.overlay.parent}: df -h there)"
        return f"QEMU stopped the guest: status {state}: {hint}"

    def console_text(self) -> str:
        return _read(self.console_log)

    def qemu_output(self) -> str:
        """What QEMU itself printed (qemu.log): its errors, not the guest's."""
        return _read(self.qemu_log)

    def crash(self) -> list[crash.Crash] | None:
        """The crashes seen on the console so far (with context), or None."""
        return crash.scan(self.console_text()) or None

    def stop(self) -> int | None:
        """QMP quit, then the whole process group killed; safe to call twice."""
        if not self._stopped:
            self._stopped = True
            if self.alive() and qmp.quit_vm(self.qmp_socket):
                self.wait_exit(STOP_GRACE_S)
            kill_group(self.proc)
            if self.qmp_socket.parent != self.run_dir:  # a short-path stand-in: ours
                shutil.rmtree(self.qmp_socket.parent, ignore_errors=True)
        return self.proc.returncode

    def learn_nested(self, wait_s: float, ssh_fallback: bool = True) -> nested.Nested:
        """The guest's nested KVM facts: from the lean init's console line (waiting up
        to wait_s for it), else by running the probe over SSH."""
        deadline = time.monotonic() + wait_s
        while True:
            found = nested.nested_from_console(self.console_text())
            if found is not None or time.monotonic() >= deadline or not self.alive():
                break
            time.sleep(POLL_S)
        if found is None and ssh_fallback and self.alive():
            found = nested.probe(self.endpoint())
        if found is not None:
            self.nested_info = found
            self.nested = found.ok
            self.save_info()
        return self.nested_info

    def save_info(self) -> Path:
        path = self.run_dir / "machine.json"
        path.write_text(json.dumps(asdict(self.info()), indent=2) + "\n")
        return path

    def info(self) -> MachineInfo:
        n = self.nested_info
        return MachineInfo(
            accel=self.accel,
            accel_reason=self.accel_reason,
            cpu_model=self.cpu_model,
            ssh_port=self.ssh_port,
            boot_seconds=round(self.boot_seconds, 2),
            nested=self.nested,
            nested_present=n.present,
            vm_types=n.vm_types,
            vm_types_created=n.created,
            guest_cpu=n.guest_cpu,
            nested_detail=n.detail,
            qemu_pid=self.proc.pid,
            boot_retries=self.retries,
        )

    def endpoint(self) -> Endpoint:
        """The remote layer's view of this VM: the lab's key, the image's pinned host
        key, never ~/.ssh/config."""
        return Endpoint(
            host=self.ssh_host,
            port=self.ssh_port,
            user=self.user,
            key_file=self.image.client_key,
            host_key_line=self.image.host_key_line,
        )

    def summary(self) -> str:
        text = f"{self.accel}, nested={self.nested}, boot {self.boot_seconds:.1f}s"
        if self.retries:
            text += f"; booted again after: {'; '.join(self.retries)}"
        return text

    def environment(self) -> dict[str, object]:
        return {
            "qemu_version": version_line(self.qemu_argv[0]),
            "accelerator": self.accel,
            "cpu_model": self.cpu_model,
            "nested": f"{self.nested} ({self.nested_info.detail})",
            "boot_seconds": round(self.boot_seconds, 2),
            "image": str(self.image.base_qcow2),
        } | (
            # An infrastructure failure the lab retried: visible, never a kernel verdict.
            {"boot_retried": f"{'; '.join(self.retries)} (console-attempt1.log)"}
            if self.retries
            else {}
        )

    def ssh_command(self) -> list[str]:
        """An OpenSSH command line that reaches this VM with the pinned key (for people)."""
        return [
            "ssh", "-p", str(self.ssh_port), "-i", str(self.image.client_key),
            "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "PasswordAuthentication=no",
            f"{self.user}@{self.ssh_host}",
        ]  # fmt: skip

    def __enter__(self) -> Machine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
