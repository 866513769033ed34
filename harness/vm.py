"""The boot stage: a kernel and an image become a running QEMU VM reachable by SSH.

Every boot gets its own qcow2 overlay (the base image never changes), the serial console
in console.log from QEMU's first instant, a QMP socket, and SSH forwarded on 127.0.0.1
at a free port. boot() returns only when the guest answers SSH with the pinned host key;
otherwise it raises InfraError saying why (a crash with its lines, QEMU's exit, a
silent console, the deadline) with the QEMU command line and the console tail. Whatever
happens, including Ctrl-C, no QEMU process outlives a failed boot or a Machine's `with`.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType

from harness import crash, keys
from harness.config import LabConfig, VmSpec
from harness.errors import InfraError
from harness.image import Image
from harness.paths import cache_dir
from harness.proc import kill_group, require_tools, tail
from harness.qemu import accel as accel_mod
from harness.qemu import qmp

# paramiko logs every failed connection attempt with a traceback while sshd starts;
# the lab reports connection failures itself.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

SSH_HOST = "127.0.0.1"
LEAN_INIT = "/usr/local/sbin/gmemlab-init"
# panic=-1 with -no-reboot: a panic ends QEMU at once instead of hanging a CI job.
BASE_CMDLINE = ("console=ttyS0", "panic=-1", "root=/dev/vda", "rw")
# KVM built in or as modules: nested virtualisation on for whichever vendor the CPU is.
NESTED_CMDLINE = ("kvm_amd.nested=1", "kvm_intel.nested=1")
POLL_S = 0.2
# After the first crash line, keep reading this long so the report has the whole splat.
CRASH_SETTLE_S = 1.5
STOP_GRACE_S = 3.0

# Only messages at KERN_WARNING or worse reach the serial console: every crash pattern
# (panic, BUG, Oops, WARNING, KASAN, lockups) stays visible, while the boot chatter, whose
# every byte is a trapped port write under TCG, does not. dmesg keeps everything;
# vm.cmdline_extra: [loglevel=8] brings the chatter back.
CONSOLE_CMDLINE = ("loglevel=5",)
# In the image: prints the guest's nested KVM facts as one JSON line. The lean init
# prints it on the console (NESTED_MARK); otherwise it is run over SSH.
NESTED_PROBE = "/usr/local/sbin/gmemlab-nested"
NESTED_MARK = "gmemlab-nested: "
NESTED_CONSOLE_WAIT_S = 20.0


@dataclass(frozen=True)
class Nested:
    """What the guest's own KVM offers (for the report and for skipping suites)."""

    present: bool  # /dev/kvm exists in the guest
    vm_types: tuple[int, ...]  # KVM_CAP_VM_TYPES (0 = default, 1 = SW_PROTECTED ...)
    created: tuple[int, ...]  # the types KVM_CREATE_VM really accepted
    guest_cpu: str
    detail: str

    @property
    def ok(self) -> bool:
        return self.present and 0 in self.created


# --- the QEMU command line (pure functions, unit-tested) ----------------------------


def kernel_cmdline(spec: VmSpec, extra: Sequence[str] = ()) -> list[str]:
    words = [*BASE_CMDLINE, *CONSOLE_CMDLINE, *NESTED_CMDLINE]
    if spec.init == "lean":
        words.append(f"init={LEAN_INIT}")
    return [*words, *spec.cmdline_extra, *extra]


def smp_numa_args(memory_mib: int, cpus: int, nodes: int) -> list[str]:
    """CPUs, memory and NUMA nodes. Each CPU is its own socket, sockets dealt to nodes
    round-robin, memory split evenly (remainder on node 0).

    One CPU per socket because CPUs sharing a socket share its last-level cache, and
    Linux WARNs (topology_sane) when LLC siblings sit on different nodes.
    """
    args = ["-smp", f"{cpus},sockets={cpus},cores=1,threads=1", "-m", f"{memory_mib}M"]
    if nodes <= 1:
        return args
    share, rest = divmod(memory_mib, nodes)
    for node in range(nodes):
        size = share + (rest if node == 0 else 0)
        args += ["-object", f"memory-backend-ram,id=mem{node},size={size}M"]
        # A node without CPUs is legal (memory-only), and still an mbind target.
        args += ["-numa", f"node,nodeid={node},memdev=mem{node}"]
    for cpu in range(cpus):
        args += ["-numa", f"cpu,node-id={cpu % nodes},socket-id={cpu}"]
    return args


def qemu_argv(
    spec: VmSpec,
    accel: accel_mod.Accel,
    *,
    bzimage: Path,
    disk: Path,
    console: Path,
    qmp_socket: Path,
    ssh_port: int,
    cmdline: Sequence[str],
    initrd: Path | None = None,
) -> list[str]:
    argv = [
        spec.qemu,
        "-name", "gmemlab",
        "-machine", "q35",
        *accel.argv,
        *smp_numa_args(spec.memory_mib, spec.cpus, spec.numa_nodes),
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-kernel", str(bzimage),
        "-append", " ".join(cmdline),
        # The overlay is thrown away after the boot: no need to flush it to disk.
        "-drive", f"file={disk},format=qcow2,if=virtio,cache=unsafe,discard=unmap",
        # Forwarded on loopback only: the guest's sshd is never reachable from outside.
        "-netdev", f"user,id=net0,hostfwd=tcp:{SSH_HOST}:{ssh_port}-:22",
        "-device", "virtio-net-pci,netdev=net0",
        "-device", "virtio-rng-pci",
        # The console file is written from QEMU's first instant; it is the source of
        # truth when SSH is gone.
        "-chardev", f"file,id=console,path={console}",
        "-serial", "chardev:console",
        "-qmp", f"unix:{qmp_socket},server=on,wait=off",
    ]  # fmt: skip
    if initrd is not None:
        argv += ["-initrd", str(initrd)]
    return argv


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


# --- the running machine ------------------------------------------------------------


class ConsoleWatch:
    """Follows console.log: new crash lines and the time of the last output."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = ""
        self.last_output = time.monotonic()
        self.first_crash_at: float | None = None

    def poll(self) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        if not data:
            return
        self.offset += len(data)
        self.last_output = time.monotonic()
        lines = (self.partial + data.decode(errors="replace")).split("\n")
        self.partial = lines.pop()
        if self.first_crash_at is None and any(crash.is_fatal(ln) for ln in lines):
            self.first_crash_at = time.monotonic()


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


class Machine:
    """A booted VM. Use as a context manager: leaving it always ends QEMU."""

    def __init__(
        self,
        *,
        proc: subprocess.Popen[bytes],
        image: Image,
        run_dir: Path,
        ssh_port: int,
        accel: accel_mod.Accel,
        qemu_argv: list[str],
        qmp_socket: Path | None = None,
    ) -> None:
        self.proc = proc
        self.image = image
        self.run_dir = run_dir
        self.ssh_host = SSH_HOST
        self.ssh_port = ssh_port
        self.user = image.user
        self.console_log = run_dir / "console.log"
        self.qemu_log = run_dir / "qemu.log"
        self.qmp_socket = qmp_socket or run_dir / "qmp.sock"
        self.accel = accel.name
        self.accel_reason = accel.reason
        self.cpu_model = accel.cpu_model
        self.qemu_argv = qemu_argv
        self.boot_seconds = 0.0
        self.nested = False
        self.nested_info = Nested(False, (), (), "", "not probed")
        self.known_hosts = run_dir / "known_hosts"
        self._stopped = False

    # The remote layer's view: where to connect and whom to trust.
    @property
    def client_key(self) -> Path:
        return self.image.client_key

    @property
    def host_key_line(self) -> str:
        return self.image.host_key_line

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_exit(self, timeout: float) -> int | None:
        """QEMU's exit status, or None if it is still running after timeout."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def console_text(self) -> str:
        try:
            return self.console_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

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

    def learn_nested(self, wait_s: float, ssh_fallback: bool = True) -> Nested:
        """The guest's nested KVM facts: from the lean init's console line (waiting up
        to wait_s for it), else by running the probe over SSH."""
        deadline = time.monotonic() + wait_s
        while True:
            found = nested_from_console(self.console_text())
            if found is not None or time.monotonic() >= deadline or not self.alive():
                break
            time.sleep(POLL_S)
        if found is None and ssh_fallback and self.alive():
            found = _probe_nested(self)
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
        )

    def ssh_command(self) -> list[str]:
        """An OpenSSH command line that reaches this VM with the pinned key (for people)."""
        return [
            "ssh", "-p", str(self.ssh_port), "-i", str(self.client_key),
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


# --- booting ------------------------------------------------------------------------


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
) -> Machine:
    """Boot bzimage on a fresh overlay of image; return once SSH works.

    tether=True makes QEMU die with the calling thread's process even on SIGKILL (use
    it from a CLI's main thread, not from worker threads, which would end QEMU early).
    """
    spec = lab.vm
    require_tools(spec.qemu, "qemu-img")
    if not bzimage.is_file():
        raise InfraError(f"no kernel at {bzimage}", "build it first: `lab build`")
    run_dir.mkdir(parents=True, exist_ok=True)
    disk = run_dir / "disk.qcow2"
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
    cmdline = kernel_cmdline(spec, extra_cmdline)
    # A free port can be taken between our check and QEMU's bind: retry with another.
    for attempt in range(3):
        machine = _start(spec, chosen, bzimage, image, run_dir, disk, cmdline, tether, initrd)
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
            machine.learn_nested(wait_s=NESTED_CONSOLE_WAIT_S if spec.init == "lean" else 0)
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
    cmdline: list[str],
    tether: bool,
    initrd: Path | None,
) -> Machine:
    console = run_dir / "console.log"
    console.unlink(missing_ok=True)
    qmp_socket = qmp_socket_path(run_dir)
    qmp_socket.unlink(missing_ok=True)
    port = free_port()
    argv = qemu_argv(
        spec,
        chosen,
        bzimage=bzimage,
        disk=disk,
        console=console,
        qmp_socket=qmp_socket,
        ssh_port=port,
        cmdline=cmdline,
        initrd=initrd,
    )
    (run_dir / "qemu-cmdline.txt").write_text(shlex.join(argv) + "\n")
    keys.write_known_hosts(run_dir / "known_hosts", SSH_HOST, port, image.host_key_line)
    with (run_dir / "qemu.log").open("wb") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            preexec_fn=_die_with_parent if tether else None,
        )
    return Machine(
        proc=proc,
        image=image,
        run_dir=run_dir,
        ssh_port=port,
        accel=chosen,
        qemu_argv=argv,
        qmp_socket=qmp_socket,
    )


# sockaddr_un.sun_path holds 108 bytes; QEMU refuses longer socket paths.
UNIX_PATH_MAX = 107


def qmp_socket_path(run_dir: Path) -> Path:
    """run_dir/qmp.sock, or, when that path is too long for a unix socket, a socket in
    a fresh short folder under /tmp (removed when the machine stops)."""
    path = run_dir / "qmp.sock"
    if len(os.fsencode(path)) <= UNIX_PATH_MAX:
        return path
    return Path(tempfile.mkdtemp(prefix="gmemlab-qmp-", dir="/tmp")) / "qmp.sock"


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
            if "could not set up host forwarding rule" in _read(machine.qemu_log).lower():
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


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _failure(machine: Machine, reason: str) -> InfraError:
    """Stop QEMU and describe the failed boot: why, crash lines, command line, tails."""
    machine.stop()
    parts = [f"boot failed: {reason}"]
    found = crash.scan(machine.console_text())
    if found:
        parts.append(crash.report(found))
    parts.append(f"QEMU command line ({machine.run_dir / 'qemu-cmdline.txt'}):")
    parts.append("    " + shlex.join(machine.qemu_argv))
    parts.append(f"console tail ({machine.console_log}):")
    parts.append(tail(machine.console_log, 25))
    qemu_out = _read(machine.qemu_log).strip()
    if qemu_out:
        parts.append(f"QEMU's own output ({machine.qemu_log}):")
        parts.append(tail(machine.qemu_log, 10))
    return InfraError("\n".join(parts), f"full console: {machine.console_log}")


def _probe_nested(machine: Machine) -> Nested:
    from harness.remote import Endpoint, Remote

    endpoint = Endpoint(
        host=machine.ssh_host,
        port=machine.ssh_port,
        user=machine.user,
        key_file=machine.client_key,
        host_key_line=machine.host_key_line,
    )
    with Remote(endpoint) as remote:
        remote.connect(deadline_s=30)
        ran = remote.run(["python3", "-S", NESTED_PROBE], timeout_s=60)
    if not ran.ok:
        return Nested(False, (), (), "", f"probe failed: {ran.error or ran.stderr.strip()}")
    lines = ran.stdout.strip().splitlines()
    return parse_nested(lines[-1] if lines else "")


def nested_from_console(text: str) -> Nested | None:
    """The lean init's NESTED_MARK line, parsed; None until it has appeared."""
    for line in text.splitlines():
        at = line.find(NESTED_MARK)
        if at >= 0:
            return parse_nested(line[at + len(NESTED_MARK) :])
    return None


def parse_nested(text: str) -> Nested:
    try:
        data = json.loads(text)
        present = bool(data["present"])
    except (ValueError, KeyError, TypeError):
        return Nested(False, (), (), "", f"the probe printed {text[:200]!r}")
    params = ", ".join(f"{k}={v}" for k, v in sorted(data.items()) if k.endswith("_nested"))
    parts = [
        f"/dev/kvm {'present' if present else 'absent'}",
        f"guest CPU flag {data.get('virt_flag') or 'none'}",
        params,
        str(data.get("error", "")).strip("; "),
    ]
    return Nested(
        present=present,
        vm_types=tuple(int(t) for t in data.get("vm_types", [])),
        created=tuple(int(t) for t in data.get("created", [])),
        guest_cpu=str(data.get("cpu", "")),
        detail="; ".join(p for p in parts if p),
    )


# --- the detached VM of `lab boot --detach`, for `lab ssh` and `lab stop` -------------


def state_file() -> Path:
    return cache_dir("vm") / "current.json"


def save_state(machine: Machine) -> Path:
    state = {
        "pid": machine.proc.pid,
        "ssh_host": machine.ssh_host,
        "ssh_port": machine.ssh_port,
        "user": machine.user,
        "client_key": str(machine.client_key),
        "host_key_line": machine.host_key_line,
        "qmp_socket": str(machine.qmp_socket),
        "run_dir": str(machine.run_dir),
        "console_log": str(machine.console_log),
    }
    path = state_file()
    path.write_text(json.dumps(state, indent=2) + "\n")
    return path


def load_state() -> dict[str, object] | None:
    """The detached VM's state if that VM still runs; a stale file is removed."""
    path = state_file()
    try:
        state: dict[str, object] = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    if not _is_our_qemu(int(str(state["pid"])), str(state["qmp_socket"])):
        path.unlink(missing_ok=True)
        return None
    return state


def _is_our_qemu(pid: int, qmp_socket: str) -> bool:
    # The pid may have been reused since: it must be a QEMU with our QMP socket.
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(qmp_socket.encode() in a for a in argv)


def stop_detached(state: dict[str, object]) -> None:
    pid = int(str(state["pid"]))
    qmp.quit_vm(Path(str(state["qmp_socket"])))
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline and _is_our_qemu(pid, str(state["qmp_socket"])):
        time.sleep(0.1)
    if _is_our_qemu(pid, str(state["qmp_socket"])):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    state_file().unlink(missing_ok=True)
    # The overlay only held that boot's guest writes; console.log etc. stay.
    (Path(str(state["run_dir"])) / "disk.qcow2").unlink(missing_ok=True)
