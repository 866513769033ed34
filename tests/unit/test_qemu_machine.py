"""A running VM's files and the one SSH endpoint built for it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.qemu import machine


@dataclass(frozen=True)
class Target:
    """A stand-in VM for the endpoint; mypy checks it against machine.SshTarget."""

    ssh_port: int
    client_key: Path
    ssh_host: str = "127.0.0.1"
    user: str = "root"
    host_key_line: str = "ssh-ed25519 AAAA"


def test_qmp_socket_stays_in_the_run_dir_when_short(tmp_path: Path) -> None:
    assert machine.qmp_socket_path(tmp_path) == tmp_path / "qmp.sock"


def test_qmp_socket_moves_to_a_short_path_when_the_run_dir_is_deep(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    path = machine.qmp_socket_path(deep)
    assert len(str(path)) <= machine.UNIX_PATH_MAX
    assert path.parent.name.startswith("gmemlab-qmp-")
    path.parent.rmdir()


def test_endpoint_pins_the_lab_key_and_host_key(tmp_path: Path) -> None:
    vm: machine.SshTarget = Target(40022, tmp_path / "lab")
    ep = machine.ssh_endpoint(vm)
    assert (ep.host, ep.port, ep.user) == ("127.0.0.1", 40022, "root")
    assert ep.key_file == tmp_path / "lab" and ep.host_key_line == "ssh-ed25519 AAAA"
    assert not ep.use_ssh_config  # the lab VM never reads ~/.ssh/config


def test_discard_overlay_keeps_the_console(tmp_path: Path) -> None:
    (tmp_path / machine.OVERLAY).write_bytes(b"qcow")
    (tmp_path / "console.log").write_text("boot\n")
    machine.discard_overlay(tmp_path)
    machine.discard_overlay(tmp_path)  # twice is fine
    assert [p.name for p in tmp_path.iterdir()] == ["console.log"]
