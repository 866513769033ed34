"""The QEMU and kernel command lines: flags, NUMA layout, console level."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from harness import config
from harness.qemu import accel, argv

TCG = accel.Accel("tcg", "max", ("-accel", "tcg", "-cpu", "max"), "KVM unusable: test")


def spec(**changes: object) -> config.VmSpec:
    return config.VmSpec().model_copy(update=changes)


def launch_for(s: config.VmSpec, folder: Path, network: bool = False) -> argv.Launch:
    """A launch with its kernel, disk, console and QMP socket in folder."""
    return argv.Launch(
        vm=s,
        accel=TCG,
        bzimage=folder / "bzImage",
        disk=folder / "disk.qcow2",
        console=folder / "console.log",
        qmp_socket=folder / "qmp.sock",
        ssh_port=40022,
        cmdline=tuple(argv.kernel_cmdline(s)),
        network=network,
    )


def argv_for(s: config.VmSpec, folder: Path, network: bool = False) -> list[str]:
    return argv.qemu_argv(launch_for(s, folder, network))


def after(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


def test_cmdline_lean_default() -> None:
    words = argv.kernel_cmdline(spec(), ["loglevel=7"])
    assert words[:4] == ["console=ttyS0", "panic=-1", "root=/dev/vda", "rw"]
    assert "kvm_amd.nested=1" in words and "kvm_intel.nested=1" in words
    assert "init=/usr/local/sbin/gmemlab-init" in words
    assert words[-1] == "loglevel=7"


def test_cmdline_systemd_has_no_init_and_keeps_lab_extras() -> None:
    words = argv.kernel_cmdline(spec(init="systemd", cmdline_extra=["kasan.fault=panic"]))
    assert not any(w.startswith("init=") for w in words)
    assert words[-1] == "kasan.fault=panic"


def test_qemu_argv_essentials(tmp_path: Path) -> None:
    args = argv_for(spec(), tmp_path)
    assert args[0] == "qemu-system-x86_64"
    assert "-no-reboot" in args and "-nodefaults" in args
    assert after(args, "-accel") == ["tcg"] and after(args, "-cpu") == ["max"]
    assert after(args, "-kernel") == [str(tmp_path / "bzImage")]
    assert "panic=-1" in after(args, "-append")[0].split()
    # SSH forwarded on loopback only; the guest reaches nothing else (restrict=on).
    assert after(args, "-netdev") == ["user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:40022-:22"]
    # The serial console goes to the file from the start; QMP on a unix socket.
    assert f"file,id=console,path={tmp_path / 'console.log'}" in after(args, "-chardev")
    assert after(args, "-serial") == ["chardev:console"]
    assert after(args, "-qmp") == [f"unix:{tmp_path / 'qmp.sock'},server=on,wait=off"]
    (drive,) = after(args, "-drive")
    assert drive.startswith(f"file={tmp_path / 'disk.qcow2'},format=qcow2,if=virtio")
    assert "-initrd" not in args


def test_a_host_vm_survives_reboot(tmp_path: Path) -> None:
    # A lab host VM is kexec'd and rebooted: QEMU must not end with the first reboot.
    launch = dataclasses.replace(launch_for(spec(), tmp_path), cmdline=(), reboot=True)
    assert "-no-reboot" not in argv.qemu_argv(launch)


def test_two_numa_nodes_split_memory_and_cpus() -> None:
    args = argv.smp_numa_args(2048, 2, 2)
    assert args[:4] == ["-smp", "2,sockets=2,cores=1,threads=1", "-m", "2048M"]
    assert after(args, "-object") == [
        "memory-backend-ram,id=mem0,size=1024M",
        "memory-backend-ram,id=mem1,size=1024M",
    ]
    assert after(args, "-numa") == [
        "node,nodeid=0,memdev=mem0",
        "node,nodeid=1,memdev=mem1",
        "cpu,node-id=0,socket-id=0",
        "cpu,node-id=1,socket-id=1",
    ]


def test_uneven_split_and_memory_only_nodes() -> None:
    args = argv.smp_numa_args(1000, 1, 3)
    sizes = [o.rsplit("size=", 1)[1] for o in after(args, "-object")]
    assert sizes == ["334M", "333M", "333M"]
    assert after(args, "-numa")[-1] == "cpu,node-id=0,socket-id=0"  # nodes 1, 2: memory only


def test_one_node_has_no_numa_options() -> None:
    args = argv.smp_numa_args(2048, 4, 1)
    assert "-numa" not in args and "-object" not in args


def test_console_loglevel_keeps_warnings() -> None:
    # loglevel=5 shows KERN_WARNING (4) and worse: WARN splats stay on the console.
    words = argv.kernel_cmdline(spec())
    assert "loglevel=5" in words


def test_a_suite_that_needs_the_network_gets_it(tmp_path: Path) -> None:
    args = argv_for(spec(), tmp_path, network=True)
    assert after(args, "-netdev") == ["user,id=net0,hostfwd=tcp:127.0.0.1:40022-:22"]


def split_opts(value: str) -> list[str]:
    """QEMU's option parser: split at single commas, ",," is a literal comma."""
    parts, cur, i = [], "", 0
    while i < len(value):
        if value[i] == ",":
            if value[i + 1 : i + 2] == ",":
                cur, i = cur + ",", i + 2
                continue
            parts.append(cur)
            cur = ""
        else:
            cur += value[i]
        i += 1
    return [*parts, cur]


def test_commas_in_paths_are_doubled(tmp_path: Path) -> None:
    """A results folder with a comma (issue 15): each path stays one option value,
    nothing after the comma becomes an option of its own."""
    root = tmp_path / "results,format=raw,if=none"
    args = argv_for(spec(), root)
    (drive,) = after(args, "-drive")
    assert split_opts(drive)[0] == f"file={root / 'disk.qcow2'}"
    assert split_opts(drive)[1:] == ["format=qcow2", "if=virtio", "cache=unsafe", "discard=unmap"]
    (chardev,) = after(args, "-chardev")
    assert split_opts(chardev) == ["file", "id=console", f"path={root / 'console.log'}"]
    (qmp,) = after(args, "-qmp")
    assert split_opts(qmp) == [f"unix:{root / 'qmp.sock'}", "server=on", "wait=off"]
    # -kernel takes its value whole (no option parsing): unchanged.
    assert after(args, "-kernel") == [str(root / "bzImage")]


def test_tcg_boots_skip_the_timer_check_kvm_boots_do_not() -> None:
    # A loaded host made TCG miss the IO-APIC timer check: a panic that is not the kernel's.
    assert "no_timer_check" in argv.kernel_cmdline(spec(), accel="tcg")
    assert "no_timer_check" not in argv.kernel_cmdline(spec(), accel="kvm")
