"""Which kernel a build is, in the terms a running host can be checked against.

After the kexec the host stage asks the host for /proc/version and /sys/kernel/notes;
this module reads the same two facts out of the build's own files:

- the banner: vmlinux holds linux_banner ("Linux version 7.3.4-x (user@host) (gcc ...)
  #1 SMP ...\\n"), which is exactly /proc/version's line. Without a vmlinux (a bare
  --bzimage), the bzImage's setup header names the release and builder (its
  kernel_version string, what `file bzImage` prints), so the check narrows to
  "Linux version <release> (<user>@<host>) ".
- the GNU build id: vmlinux's .notes section, which the running kernel exports as
  /sys/kernel/notes. The lab builds reproducibly (fixed KBUILD_BUILD_TIMESTAMP, user and
  host), so two builds of one release have the same banner: the build id is what tells
  them apart.

Nothing is added to the build manifest: the build folder's vmlinux is the record.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

from harness.errors import InfraError
from harness.hosts.deploy import KernelUnderTest, parse_build_id

_BANNER = re.compile(rb"Linux version [^\0\n%]+\n\0")
# The x86 boot protocol's setup header: the magic "HdrS" at 0x202, and at 0x20e the
# offset (from 0x200) of the NUL-terminated kernel version string.
_HDRS_AT = 0x202
_VERSION_PTR_AT = 0x20E
_SHT_NOTE = 7


def banner_of(vmlinux: bytes) -> str | None:
    """linux_banner from vmlinux's bytes, without its newline (None when not found)."""
    found = _BANNER.search(vmlinux)
    return found.group(0)[:-2].decode(errors="replace") if found else None


def bzimage_version(bzimage: Path) -> str | None:
    """The setup header's kernel version string, e.g. '7.3.4 (u@h) #1 SMP ...'."""
    with bzimage.open("rb") as f:
        head = f.read(0x10000)
    if head[_HDRS_AT : _HDRS_AT + 4] != b"HdrS" or len(head) < _VERSION_PTR_AT + 2:
        return None
    (ptr,) = struct.unpack_from("<H", head, _VERSION_PTR_AT)
    start = 0x200 + ptr
    end = head.find(b"\0", start)
    if ptr == 0 or end < 0:
        return None
    return head[start:end].decode(errors="replace")


def notes_of(data: bytes) -> bytes:
    """The note sections of an ELF64 little-endian file (vmlinux), concatenated."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return b""
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    out = []
    for i in range(shnum):
        at = shoff + i * shentsize
        if at + 64 > len(data):
            break
        sh_type = struct.unpack_from("<I", data, at + 4)[0]
        offset, size = struct.unpack_from("<QQ", data, at + 24)
        if sh_type == _SHT_NOTE:
            out.append(data[offset : offset + size])
    return b"".join(out)


def build_id_of(vmlinux: bytes) -> str | None:
    notes = notes_of(vmlinux)
    return parse_build_id(notes.hex()) if notes else None


def kernel_under_test(bzimage: Path, vmlinux: Path | None) -> KernelUnderTest:
    """What the host must run after the kexec for the deploy to count."""
    if vmlinux is not None and vmlinux.is_file():
        data = vmlinux.read_bytes()
        banner = banner_of(data)
        if banner is not None:
            return KernelUnderTest(bzimage, banner, build_id_of(data))
    version = bzimage_version(bzimage)
    if version is None:
        raise InfraError(
            f"{bzimage}: no kernel version in its setup header (not an x86 bzImage?)",
            "deploy a bzImage from `lab build` (arch/x86/boot/bzImage)",
        )
    release, _, rest = version.partition(" ")
    builder = rest.split(")", 1)[0] + ")" if rest.startswith("(") else ""
    return KernelUnderTest(bzimage, f"Linux version {release} {builder}".rstrip() + " ")
