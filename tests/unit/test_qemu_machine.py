"""A running VM's files: its QMP socket path, its overlay discarded, its console kept."""

from __future__ import annotations

from pathlib import Path

from harness.qemu import machine


def test_qmp_socket_stays_in_the_run_dir_when_short(tmp_path: Path) -> None:
    assert machine.qmp_socket_path(tmp_path) == tmp_path / "qmp.sock"


def test_qmp_socket_moves_to_a_short_path_when_the_run_dir_is_deep(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    path = machine.qmp_socket_path(deep)
    assert len(str(path)) <= machine.UNIX_PATH_MAX
    assert path.parent.name.startswith("gmemlab-qmp-")
    path.parent.rmdir()


def test_discard_overlay_keeps_the_console(tmp_path: Path) -> None:
    (tmp_path / machine.OVERLAY).write_bytes(b"qcow")
    (tmp_path / "console.log").write_text("boot\n")
    machine.discard_overlay(tmp_path)
    machine.discard_overlay(tmp_path)  # twice is fine
    assert [p.name for p in tmp_path.iterdir()] == ["console.log"]
