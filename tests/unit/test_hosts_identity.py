"""What the host must run after the kexec: the banner and build id of a build's files."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from harness.errors import InfraError
from harness.hosts import deploy, identity

BANNER = (
    "Linux version 7.3.4-hosttest (gmemlab@gmemlab) (gcc (Debian 12.2.0-14+deb12u1) 12.2.0, "
    "GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC 1970-01-01 00:00:00 UTC"
)
BUILD_ID = "8c55fc02bcba98a054b30756c1a13dbb68d598c9"


def note(name: bytes, kind: int, desc: bytes) -> bytes:
    def pad(b: bytes) -> bytes:
        return b + b"\0" * (-len(b) % 4)

    return struct.pack("<III", len(name), len(desc), kind) + pad(name) + pad(desc)


def fake_vmlinux(path: Path, *, banner: str = BANNER, build_id: str | None = BUILD_ID) -> Path:
    """An ELF64 LE file with .rodata holding linux_banner (and the printf-style proc
    banner before it, which must not be taken) and a .notes section, as vmlinux has."""
    rodata = b"%s version %s (gmemlab@gmemlab) (gcc) %s\n\0" + banner.encode() + b"\n\0"
    notes = note(b"Linux\0", 0x100, b"\0\0\0\0")
    if build_id is not None:
        notes += note(b"GNU\0", 3, bytes.fromhex(build_id))
    body = b"\x7fELF" + bytes([2, 1, 1]) + b"\0" * (64 - 7)
    rodata_at = len(body)
    body += rodata
    notes_at = len(body)
    body += notes
    shoff = len(body)

    def section(kind: int, offset: int, size: int) -> bytes:
        return struct.pack("<IIQQQQIIQQ", 0, kind, 0, 0, offset, size, 0, 0, 4, 0)

    sections = (
        section(0, 0, 0) + section(1, rodata_at, len(rodata)) + section(7, notes_at, len(notes))
    )
    data = bytearray(body + sections)
    struct.pack_into("<Q", data, 0x28, shoff)
    struct.pack_into("<HH", data, 0x3A, 64, 3)
    path.write_bytes(bytes(data))
    return path


def fake_bzimage(path: Path, version: str | None) -> Path:
    data = bytearray(0x4000)
    if version is not None:
        data[0x202:0x206] = b"HdrS"
        struct.pack_into("<H", data, 0x20E, 0x3000 - 0x200)
        raw = version.encode() + b"\0"
        data[0x3000 : 0x3000 + len(raw)] = raw
    path.write_bytes(bytes(data))
    return path


def test_banner_and_build_id_come_from_vmlinux(tmp_path: Path) -> None:
    bz = fake_bzimage(tmp_path / "bzImage", "7.3.4-hosttest (gmemlab@gmemlab) #1 SMP")
    k = identity.kernel_under_test(bz, fake_vmlinux(tmp_path / "vmlinux"))
    assert k == deploy.KernelUnderTest(bz, BANNER, BUILD_ID)
    # What the host reports for that kernel passes the deploy's check.
    notes = (
        note(b"Linux\0", 0x100, b"\0\0\0\0") + note(b"GNU\0", 3, bytes.fromhex(BUILD_ID))
    ).hex()
    status, _ = deploy.verify(k, BANNER + "\n", notes)
    assert status is deploy.BootStatus.BOOTED


def test_another_build_of_the_same_release_is_told_apart_by_its_build_id(tmp_path: Path) -> None:
    k = identity.kernel_under_test(
        fake_bzimage(tmp_path / "bzImage", None), fake_vmlinux(tmp_path / "vmlinux")
    )
    other = note(b"GNU\0", 3, bytes(20)).hex()
    status, why = deploy.verify(k, BANNER, other)
    assert status is deploy.BootStatus.WRONG_BUILD and BUILD_ID in why


def test_without_vmlinux_the_bzimage_header_names_release_and_builder(tmp_path: Path) -> None:
    bz = fake_bzimage(
        tmp_path / "bzImage", "7.3.4-hosttest (gmemlab@gmemlab) #1 SMP PREEMPT_DYNAMIC 1970"
    )
    k = identity.kernel_under_test(bz, None)
    assert k.expect_version == "Linux version 7.3.4-hosttest (gmemlab@gmemlab) "
    assert k.build_id is None
    assert k.expect_version in BANNER
    # The plain lab kernel of the same tree is another kernel.
    assert k.expect_version not in BANNER.replace("-hosttest", "")


def test_not_a_bzimage_is_an_infra_error(tmp_path: Path) -> None:
    with pytest.raises(InfraError, match="setup header"):
        identity.kernel_under_test(fake_bzimage(tmp_path / "bzImage", None), None)


def test_vmlinux_without_a_build_id(tmp_path: Path) -> None:
    bz = fake_bzimage(tmp_path / "bzImage", "7.3.4 (u@h) #1")
    k = identity.kernel_under_test(bz, fake_vmlinux(tmp_path / "vmlinux", build_id=None))
    assert k.expect_version == BANNER and k.build_id is None
