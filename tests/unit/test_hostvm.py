"""`lab host-vm`: the detached stand-in host, its state and its SSH config entry.

QEMU is replaced by a sleeping process that carries the QMP socket path in its argv
(which is how a detached state recognises its QEMU); the boot's arguments are checked.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest

from harness import config, hostvm
from harness.errors import UserError
from harness.hosts import sshconfig
from harness.qemu import boot as qemu_boot
from harness.remote import Endpoint
from tests.unit.fakes import FakeImage

KEY_LINE = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIx0gWJFWCN9TeGpTMrhOVoC9OfUCdtx8MkHelHM7Hlm"


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


class SleepingQemu:
    """What hostvm.up reads from a booted Machine, over a process standing in for QEMU."""

    def __init__(self, run_dir: Path, port: int) -> None:
        self.run_dir = run_dir
        self.qmp_socket = run_dir / "qmp.sock"
        self.console_log = run_dir / "console.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(120)", str(self.qmp_socket)],
            start_new_session=True,
        )
        # Popen can return before the child's /proc/PID/cmdline holds its argv, and
        # hostvm recognises its QEMU by that argv: wait for it (as a real VM would be).
        cmdline = Path(f"/proc/{self.proc.pid}/cmdline")
        deadline = time.monotonic() + 10
        while os.fsencode(self.qmp_socket) not in cmdline.read_bytes():
            assert time.monotonic() < deadline, "the stand-in QEMU never showed its argv"
            time.sleep(0.01)
        self.ssh_host, self.ssh_port, self.user = "127.0.0.1", port, "root"
        self.stopped = False

    def endpoint(self) -> Endpoint:
        key = Path("/cache/keys/id_ed25519")
        return Endpoint(self.ssh_host, self.ssh_port, self.user, key, KEY_LINE)

    def stop(self) -> None:
        self.stopped = True
        self.proc.kill()


@pytest.fixture
def booted(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[list[tuple[SleepingQemu, dict[str, Any]]]]:
    seen: list[tuple[SleepingQemu, dict[str, Any]]] = []

    def boot(lab: config.LabConfig, bz: Path, img: Any, run_dir: Path, **kw: Any) -> Any:
        m = SleepingQemu(run_dir, 40000 + len(seen))
        seen.append((m, {"init": lab.vm.init, **kw}))
        return m

    monkeypatch.setattr(qemu_boot, "boot", boot)
    yield seen
    for m, _ in seen:
        m.proc.kill()
        m.proc.wait()


def image() -> Any:
    img = FakeImage()
    img.host_key_line = KEY_LINE
    return img


def test_up_boots_a_rebooting_systemd_vm_and_writes_its_ssh_entry(
    booted: list[tuple[SleepingQemu, dict[str, Any]]], cache: Path
) -> None:
    vm = hostvm.up(config.load(), "hv1", Path("/b/bzImage"), image())
    ((machine, how),) = booted
    # systemd (for systemctl kexec/reboot), no -no-reboot, not tied to this process.
    assert how == {"init": "systemd", "tether": False, "reboot": True}
    assert vm.state.pid == machine.proc.pid and vm.folder == cache / "hosts" / "hv1"
    assert hostvm.find("hv1") == vm and [v.name for v in hostvm.running()] == ["hv1"]
    known = (cache / "hosts" / "hv1" / "known_hosts").read_text()
    assert known == f"[127.0.0.1]:40000 {KEY_LINE}\n"
    parsed = paramiko.SSHConfig.from_path(str(sshconfig.path())).lookup("hv1")
    assert (parsed["hostname"], parsed["port"], parsed["user"]) == ("127.0.0.1", "40000", "root")
    assert parsed["userknownhostsfile"] == str(cache / "hosts" / "hv1" / "known_hosts")
    assert parsed["stricthostkeychecking"] == "yes"
    assert list(parsed["identityfile"]) == [str(FakeImage.client_key)]
    # The console command for lab.yaml follows the VM's serial console file.
    assert vm.console_argv() == ["tail", "-n", "0", "-F", str(machine.console_log)]


def test_a_second_up_is_refused_and_down_removes_vm_and_entry(
    booted: list[tuple[SleepingQemu, dict[str, Any]]],
) -> None:
    lab = config.load()
    hostvm.up(lab, "hv1", Path("/b/bzImage"), image())
    hostvm.up(lab, "hv2", Path("/b/bzImage"), image())
    with pytest.raises(UserError, match="host VM hv1 is already up"):
        hostvm.up(lab, "hv1", Path("/b/bzImage"), image())
    assert "Host hv1" in sshconfig.path().read_text()
    stopped = hostvm.down("hv1")
    assert stopped is not None and stopped.name == "hv1"
    booted[0][0].proc.wait(timeout=10)  # killed (its QMP socket does not exist)
    text = sshconfig.path().read_text()
    assert "Host hv1" not in text and "Host hv2" in text
    assert hostvm.find("hv1") is None and hostvm.down("hv1") is None


def test_a_vm_whose_qemu_died_is_forgotten(
    booted: list[tuple[SleepingQemu, dict[str, Any]]],
) -> None:
    hostvm.up(config.load(), "hv1", Path("/b/bzImage"), image())
    booted[0][0].proc.kill()
    booted[0][0].proc.wait()
    assert hostvm.find("hv1") is None
    assert "Host hv1" not in sshconfig.path().read_text()
    # ... so it can be brought up again.
    hostvm.up(config.load(), "hv1", Path("/b/bzImage"), image())


@pytest.mark.parametrize("name", ["*", "a b", "../x", "-oProxyCommand=x", "hv1\nHost *"])
def test_a_name_that_could_change_the_ssh_config_is_refused(name: str) -> None:
    with pytest.raises(UserError, match="not a safe name"):
        hostvm.up(config.load(), name, Path("/b/bzImage"), image())


# --- the default kernel cannot be fetched (GitHub unreachable) ------------------------


def unreachable_git(monkeypatch: pytest.MonkeyPatch) -> None:
    """git ls-remote fails as it does offline; the host checks pass."""
    from harness import build
    from harness.source import git

    def run_git(*args: str, **kwargs: Any) -> str:
        raise subprocess.CalledProcessError(
            128, ["git", *args], "", "fatal: unable to access: Could not resolve host\n"
        )

    monkeypatch.setattr(git, "run_git", run_git)
    monkeypatch.setattr(build, "check_host", lambda: None)


def test_up_with_an_unfetchable_default_kernel_names_it_and_the_way_out(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from harness import cli

    unreachable_git(monkeypatch)
    lab = config.load()
    assert cli.main(["host-vm", "up", "hv1"]) == 3
    err = capsys.readouterr().err
    assert f"kernel {lab.defaults.kernel!r}" in err  # which kernel, though none was given
    assert "defaults.kernel" in err and "--kernel mainline" in err
    assert "Traceback" not in err


def test_other_commands_say_the_same_for_the_same_kernel(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from harness import cli

    unreachable_git(monkeypatch)
    assert cli.main(["host-vm", "up", "hv1"]) == 3
    host_vm = capsys.readouterr().err
    assert cli.main(["boot"]) == 3
    assert capsys.readouterr().err == host_vm
    assert cli.main(["build", "--kernel", "series"]) == 3
    assert capsys.readouterr().err == host_vm


def test_a_kernel_that_is_not_the_default_is_not_called_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from harness.source import prepare_source

    unreachable_git(monkeypatch)
    lab = config.load()
    lab = lab.model_copy(update={"defaults": lab.defaults.model_copy(update={"kernel": "x"})})
    with pytest.raises(UserError) as err:
        prepare_source(lab, "series")
    assert "kernel 'series'" in err.value.message and "--kernel mainline" in err.value.message
    assert "defaults.kernel" not in err.value.message


def test_up_help_says_which_kernel_it_boots(capsys: pytest.CaptureFixture[str]) -> None:
    from harness import cli

    with pytest.raises(SystemExit):
        cli.main(["host-vm", "up", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "defaults.kernel" in out and "--kernel mainline" in out
