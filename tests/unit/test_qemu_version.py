"""The one `qemu --version` query: parsed for the accelerator, a line for the report."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from harness.errors import InfraError
from harness.qemu import version


def test_parse_version() -> None:
    text = "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright"
    assert version.parse_version(text) == (10, 0, 2)
    assert version.parse_version("QEMU emulator version 7.2") == (7, 2, 0)
    with pytest.raises(InfraError):
        version.parse_version("nonsense")


def test_one_query_per_binary_serves_number_and_line(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    qemu = tmp_path / "qemu"
    qemu.write_text(f'#!/bin/sh\necho x >> {calls}\necho "QEMU emulator version 9.2.1"\n')
    qemu.chmod(qemu.stat().st_mode | stat.S_IXUSR)
    assert version.qemu_version(str(qemu)) == (9, 2, 1)
    assert version.version_line(str(qemu)) == "QEMU emulator version 9.2.1"
    assert calls.read_text() == "x\n"


def test_version_line_never_raises(tmp_path: Path) -> None:
    line = version.version_line(str(tmp_path / "no-such-qemu"))
    assert line.startswith("unknown (") and "not found" in line
