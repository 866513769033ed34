"""The boot stage: QEMU command line, NUMA layout, ports, console watch, and boot()'s
failure paths and teardown against a QEMU stand-in (tests/unit/fake_qemu.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import config, vm
from harness.errors import InfraError
from harness.image import Image
from harness.qemu import accel

TCG = accel.Accel("tcg", "max", ("-accel", "tcg", "-cpu", "max"), "KVM unusable: test")


def spec(**changes: object) -> config.VmSpec:
    return config.VmSpec().model_copy(update=changes)


def argv_for(s: config.VmSpec, tmp_path: Path) -> list[str]:
    return vm.qemu_argv(
        s,
        TCG,
        bzimage=tmp_path / "bzImage",
        disk=tmp_path / "disk.qcow2",
        console=tmp_path / "console.log",
        qmp_socket=tmp_path / "qmp.sock",
        ssh_port=40022,
        cmdline=vm.kernel_cmdline(s),
    )


def after(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_cmdline_lean_default() -> None:
    words = vm.kernel_cmdline(spec(), ["loglevel=7"])
    assert words[:4] == ["console=ttyS0", "panic=-1", "root=/dev/vda", "rw"]
    assert "kvm_amd.nested=1" in words and "kvm_intel.nested=1" in words
    assert "init=/usr/local/sbin/gmemlab-init" in words
    assert words[-1] == "loglevel=7"


def test_cmdline_systemd_has_no_init_and_keeps_lab_extras() -> None:
    words = vm.kernel_cmdline(spec(init="systemd", cmdline_extra=["kasan.fault=panic"]))
    assert not any(w.startswith("init=") for w in words)
    assert words[-1] == "kasan.fault=panic"


def test_qemu_argv_essentials(tmp_path: Path) -> None:
    argv = argv_for(spec(), tmp_path)
    assert argv[0] == "qemu-system-x86_64"
    assert "-no-reboot" in argv and "-nodefaults" in argv
    assert after(argv, "-accel") == ["tcg"] and after(argv, "-cpu") == ["max"]
    assert after(argv, "-kernel") == [str(tmp_path / "bzImage")]
    assert "panic=-1" in after(argv, "-append")[0].split()
    # SSH forwarded on loopback only.
    assert after(argv, "-netdev") == ["user,id=net0,hostfwd=tcp:127.0.0.1:40022-:22"]
    # The serial console goes to the file from the start; QMP on a unix socket.
    assert f"file,id=console,path={tmp_path / 'console.log'}" in after(argv, "-chardev")
    assert after(argv, "-serial") == ["chardev:console"]
    assert after(argv, "-qmp") == [f"unix:{tmp_path / 'qmp.sock'},server=on,wait=off"]
    (drive,) = after(argv, "-drive")
    assert drive.startswith(f"file={tmp_path / 'disk.qcow2'},format=qcow2,if=virtio")
    assert "-initrd" not in argv


def test_two_numa_nodes_split_memory_and_cpus() -> None:
    args = vm.smp_numa_args(2048, 2, 2)
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
    args = vm.smp_numa_args(1000, 1, 3)
    sizes = [o.rsplit("size=", 1)[1] for o in after(args, "-object")]
    assert sizes == ["334M", "333M", "333M"]
    assert after(args, "-numa")[-1] == "cpu,node-id=0,socket-id=0"  # nodes 1, 2: memory only


def test_one_node_has_no_numa_options() -> None:
    args = vm.smp_numa_args(2048, 4, 1)
    assert "-numa" not in args and "-object" not in args


def test_free_port_is_on_loopback_and_bindable() -> None:
    port = vm.free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_ssh_banner_needs_an_ssh_server() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        # Accepting without a banner (QEMU's user-net before sshd) is not "up".
        assert not vm.ssh_banner(port, timeout=0.3)
    assert not vm.ssh_banner(vm.free_port(), timeout=0.3)


def test_console_watch_sees_fatal_lines_across_partial_writes(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    watch = vm.ConsoleWatch(log)
    watch.poll()  # no file yet
    log.write_text("[ 0.1] WARNING: CPU: 0 PID: 1 at x.c:1 f+0x0/0x1\n[ 0.2] Kernel pa")
    watch.poll()
    assert watch.first_crash_at is None  # a WARN is reported later, not a boot failure
    with log.open("a") as f:
        f.write("nic - not syncing: oops\n")
    watch.poll()
    assert watch.first_crash_at is not None


# --- boot() against the QEMU stand-in ----------------------------------------------


@pytest.fixture
def fake_boot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    qemu = tmp_path / "qemu"
    qemu.write_text(f"#!{sys.executable}\n" + (Path(__file__).parent / "fake_qemu.py").read_text())
    qemu.chmod(0o755)
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "16M"], check=True)
    (tmp_path / "bzImage").write_bytes(b"kernel")
    key = tmp_path / "id"
    key.write_text("k")
    img = Image(base, "h", key, key, key, "ssh-ed25519 AAAA")
    monkeypatch.setattr(
        accel, "cached_probe", lambda qemu, kernel: accel.Probe(False, "test", (10, 0, 0))
    )
    lab = config.load()
    lab = lab.model_copy(
        update={"vm": lab.vm.model_copy(update={"qemu": str(qemu), "boot_timeout_s": 20})}
    )

    def boot(mode: str, nested: bool = False, **vm_changes: object) -> vm.Machine:
        monkeypatch.setenv("FAKE_QEMU_MODE", mode)
        lab_ = lab.model_copy(update={"vm": lab.vm.model_copy(update=vm_changes)})
        return vm.boot(lab_, tmp_path / "bzImage", img, tmp_path / "run", probe_nested=nested)

    return boot


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_boot_reaches_ssh_and_stop_quits_through_qmp(fake_boot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with fake_boot("ssh") as m:
        assert m.alive()
        assert m.accel == "tcg" and m.cpu_model == "max"
        assert m.ssh_host == "127.0.0.1" and m.user == "root"
        assert m.boot_seconds > 0
        assert m.crash() is None
        assert (tmp_path / "run" / "qemu-cmdline.txt").read_text().startswith(m.qemu_argv[0])
        assert (tmp_path / "run" / "machine.json").is_file()
        known = (tmp_path / "run" / "known_hosts").read_text()
        assert known == f"[127.0.0.1]:{m.ssh_port} ssh-ed25519 AAAA\n"
        pid = m.proc.pid
    # QMP quit ended it cleanly (exit 0), not the kill.
    assert m.proc.returncode == 0
    assert gone(pid)
    assert m.stop() == 0  # twice is fine


def test_boot_panic_is_reported_with_its_lines(fake_boot) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InfraError) as info:
        fake_boot("panic")
    text = info.value.message
    assert "boot failed: the kernel crashed while booting" in text
    assert "bug at line 2: BUG: kernel NULL pointer dereference" in text
    assert "Kernel panic - not syncing: Fatal exception" in text
    assert "QEMU command line" in text and "-no-reboot" in text
    assert "console tail" in text


def test_qemu_exit_is_reported_with_its_output(fake_boot) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InfraError) as info:
        fake_boot("exit")
    text = info.value.message
    assert "QEMU exited with status 1 before SSH came up" in text
    assert "Could not open 'x'" in text


def test_silent_guest_hits_the_watchdog_and_is_killed(fake_boot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    with pytest.raises(InfraError, match="no console output for 5s"):
        fake_boot("silent", silence_timeout_s=5)
    assert time.monotonic() - start < 15
    cmd = (tmp_path / "run" / "qemu-cmdline.txt").read_text()
    assert cmd  # written before the start
    out = subprocess.run(["pgrep", "-f", str(tmp_path / "qemu")], capture_output=True)
    assert out.stdout == b""


def test_interrupt_during_boot_leaves_no_qemu(fake_boot, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def interrupted(machine: vm.Machine, spec: config.VmSpec) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(vm, "_wait_for_ssh", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fake_boot("silent")
    time.sleep(0.2)
    out = subprocess.run(["pgrep", "-f", str(tmp_path / "qemu")], capture_output=True)
    assert out.stdout == b""


def test_missing_kernel_is_reported(fake_boot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "bzImage").unlink()
    with pytest.raises(InfraError, match="no kernel at"):
        fake_boot("ssh")


# --- nested KVM facts ----------------------------------------------------------------

NESTED_LINE = (
    'gmemlab-nested: {"cpu": "AMD EPYC", "created": [0, 1], "error": "", '
    '"kvm_amd_nested": "1", "present": true, "virt_flag": "svm", "vm_types": [0, 1]}'
)


def test_nested_line_on_the_console_is_parsed() -> None:
    text = f"[    5.6] EXT4-fs (vda): re-mounted.\ngmemlab login: {NESTED_LINE}\n"
    nested = vm.nested_from_console(text)
    assert nested is not None
    assert nested.ok and nested.present
    assert nested.vm_types == (0, 1) and nested.created == (0, 1)
    assert nested.guest_cpu == "AMD EPYC"
    assert "kvm_amd_nested=1" in nested.detail and "guest CPU flag svm" in nested.detail


def test_no_nested_line_yet() -> None:
    assert vm.nested_from_console("[ 1.0] Linux version 7.3\n") is None


def test_guest_without_kvm_is_not_nested() -> None:
    nested = vm.parse_nested(
        '{"present": false, "vm_types": [], "created": [], "error": "No such file"}'
    )
    assert not nested.ok
    assert "/dev/kvm absent" in nested.detail and "No such file" in nested.detail


def test_garbage_from_the_probe_is_not_nested() -> None:
    nested = vm.parse_nested("Traceback (most recent call last):")
    assert not nested.ok
    assert "Traceback" in nested.detail


def test_console_loglevel_keeps_warnings() -> None:
    # loglevel=5 shows KERN_WARNING (4) and worse: WARN splats stay on the console.
    words = vm.kernel_cmdline(spec())
    assert "loglevel=5" in words


def test_lean_boot_learns_nested_from_the_console(fake_boot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with fake_boot("ssh", nested=True) as m:
        assert m.nested
        assert m.nested_info.created == (0, 1)
    info = (tmp_path / "run" / "machine.json").read_text()
    assert '"nested": true' in info


def test_nested_line_from_a_real_lean_boot() -> None:
    golden = Path(__file__).parent / "golden" / "console" / "lab-7.3-clean-boot-lean.log"
    nested = vm.nested_from_console(golden.read_text())
    assert nested is not None and nested.ok
    assert nested.created == (0, 1)  # KVM_X86_DEFAULT_VM and KVM_X86_SW_PROTECTED_VM


def test_missing_base_image_is_reported(fake_boot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "base.qcow2").unlink()
    with pytest.raises(InfraError, match="cannot create the boot overlay"):
        fake_boot("ssh")


def test_a_taken_port_is_retried_with_another(fake_boot, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("FAKE_QEMU_FLAG", str(tmp_path / "failed-once"))
    with fake_boot("port-taken-once") as m:
        assert m.alive()
    assert (tmp_path / "failed-once").exists()


def test_qmp_socket_stays_in_the_run_dir_when_short(tmp_path: Path) -> None:
    assert vm.qmp_socket_path(tmp_path) == tmp_path / "qmp.sock"


def test_qmp_socket_moves_to_a_short_path_when_the_run_dir_is_deep(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    path = vm.qmp_socket_path(deep)
    assert len(str(path)) <= vm.UNIX_PATH_MAX
    assert path.parent.name.startswith("gmemlab-qmp-")
    path.parent.rmdir()


def test_deep_run_dir_boots_and_cleans_its_socket_folder(  # type: ignore[no-untyped-def]
    fake_boot, tmp_path: Path, monkeypatch
) -> None:
    real_boot = vm.boot
    deep = tmp_path / ("r" * 70) / ("s" * 50)

    def boot_deep(lab, bzimage, img, run_dir, **kw):
        return real_boot(lab, bzimage, img, deep, **kw)

    monkeypatch.setattr(vm, "boot", boot_deep)
    with fake_boot("ssh") as m:
        assert m.qmp_socket.parent != deep
        socket_dir = m.qmp_socket.parent
    assert m.proc.returncode == 0  # QMP quit through the short path worked
    assert not socket_dir.exists()
