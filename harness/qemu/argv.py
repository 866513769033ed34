"""The QEMU command line and the kernel command line, as pure functions.

Nothing here starts a process or touches a file, so every flag is unit-tested. The
architecture facts (machine type, console device) come from harness.arch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import arch
from harness.config import VmSpec
from harness.qemu.accel import Accel

# Forwarded ports are bound here only: the guest's sshd is never reachable from outside.
SSH_HOST = "127.0.0.1"
LEAN_INIT = "/usr/local/sbin/gmemlab-init"
# panic=-1 with -no-reboot: a panic ends QEMU at once instead of hanging a CI job.
BASE_CMDLINE = (f"console={arch.HOST.console}", "panic=-1", "root=/dev/vda", "rw")
# KVM built in or as modules: nested virtualisation on for whichever vendor the CPU is.
NESTED_CMDLINE = ("kvm_amd.nested=1", "kvm_intel.nested=1")
# Only messages at KERN_WARNING or worse reach the serial console: every crash pattern
# (panic, BUG, Oops, WARNING, KASAN, lockups) stays visible, while the boot chatter, whose
# every byte is a trapped port write under TCG, does not. dmesg keeps everything;
# vm.cmdline_extra: [loglevel=8] brings the chatter back.
CONSOLE_CMDLINE = ("loglevel=5",)
# Under TCG on a loaded host the emulated timer can miss the kernel's early IO-APIC
# check, which then panics ("IO-APIC + timer doesn't work!"): a boot lost to the host's
# load, not to the kernel under test. The check proves nothing about an emulated board.
TCG_CMDLINE = ("no_timer_check",)


@dataclass(frozen=True)
class Launch:
    """One start of QEMU: everything its command line depends on."""

    vm: VmSpec  # lab.yaml's vm: section (binary, memory, CPUs, NUMA nodes)
    accel: Accel
    bzimage: Path
    disk: Path
    console: Path
    qmp_socket: Path
    ssh_port: int
    cmdline: tuple[str, ...]
    initrd: Path | None = None
    # The guest may reach the network (a suite asks for it): user networking without
    # restrict=on. Off, the guest reaches nothing but its SSH forward: not the host's
    # loopback services through the user network's gateway, not the outside.
    network: bool = False
    # False: a guest reboot (or a panic, with panic=-1) ends QEMU. True: the machine
    # restarts on the same -kernel, as a lab host VM must across kexec and reboot.
    reboot: bool = False


def opt_value(path: Path | str) -> str:
    """A path as one value inside a QEMU option string (`file=...,format=...`): QEMU
    splits those at commas and reads ",," as a comma, so a comma in a path is doubled
    (else `/results/a,b` would end the value and inject an option)."""
    return str(path).replace(",", ",,")


def kernel_cmdline(spec: VmSpec, extra: Sequence[str] = (), accel: str = "") -> list[str]:
    words = [*BASE_CMDLINE, *CONSOLE_CMDLINE, *NESTED_CMDLINE]
    if accel == "tcg":
        words += TCG_CMDLINE
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


def netdev(launch: Launch) -> str:
    """User networking with the SSH forward; restricted unless the guest needs the net."""
    restrict = "" if launch.network else ",restrict=on"
    return f"user,id=net0{restrict},hostfwd=tcp:{SSH_HOST}:{launch.ssh_port}-:22"


def qemu_argv(launch: Launch) -> list[str]:
    vm = launch.vm
    argv = [
        vm.qemu,
        "-name", "gmemlab",
        "-machine", arch.HOST.qemu_machine,
        *launch.accel.argv,
        *smp_numa_args(vm.memory_mib, vm.cpus, vm.numa_nodes),
        "-nodefaults", "-no-user-config", "-display", "none",
        *([] if launch.reboot else ["-no-reboot"]),
        "-kernel", str(launch.bzimage),
        "-append", " ".join(launch.cmdline),
        # The overlay is thrown away after the boot: no need to flush it to disk.
        "-drive",
        f"file={opt_value(launch.disk)},format=qcow2,if=virtio,cache=unsafe,discard=unmap",
        "-netdev", netdev(launch),
        "-device", "virtio-net-pci,netdev=net0",
        "-device", "virtio-rng-pci",
        # The console file is written from QEMU's first instant; it is the source of
        # truth when SSH is gone.
        "-chardev", f"file,id=console,path={opt_value(launch.console)}",
        "-serial", "chardev:console",
        "-qmp", f"unix:{opt_value(launch.qmp_socket)},server=on,wait=off",
    ]  # fmt: skip
    if launch.initrd is not None:
        argv += ["-initrd", str(launch.initrd)]
    return argv
