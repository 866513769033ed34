"""`qemu --version`, asked once per QEMU binary.

The accelerator choice needs the number (multi-threaded TCG from 8.0 on) and the run's
report the text; both read this one answer.
"""

from __future__ import annotations

import functools
import re
import subprocess

from harness import arch
from harness.errors import InfraError, LabError, UserError

VERSION_TIMEOUT_S = 30


def qemu_missing(qemu: str) -> UserError:
    return UserError(f"{qemu}: not found", f"install {arch.HOST.qemu_package} (or run `make deps`)")


# Cached per binary: a run asks for the accelerator and for the report, and the binary
# does not change under it. Failures are not cached (functools.cache skips raises).
@functools.cache
def version_text(qemu: str) -> str:
    """What `qemu --version` printed."""
    try:
        return subprocess.run(
            [qemu, "--version"],
            capture_output=True,
            text=True,
            timeout=VERSION_TIMEOUT_S,
            check=True,
        ).stdout
    except FileNotFoundError:
        raise qemu_missing(qemu) from None
    except (subprocess.SubprocessError, OSError) as exc:
        raise InfraError(f"{qemu} --version failed: {exc}") from exc


def qemu_version(qemu: str) -> tuple[int, int, int]:
    return parse_version(version_text(qemu))


def parse_version(text: str) -> tuple[int, int, int]:
    match = re.search(r"version (\d+)\.(\d+)(?:\.(\d+))?", text)
    if not match:
        raise InfraError(f"cannot read the QEMU version from {text[:80]!r}")
    return (int(match[1]), int(match[2]), int(match[3] or 0))


def version_line(qemu: str) -> str:
    """The first line of `qemu --version`, for the report. Never raises: the report is
    written even when QEMU cannot be asked."""
    try:
        text = version_text(qemu)
    except LabError as exc:
        return f"unknown ({exc.what})"
    return text.splitlines()[0] if text else "unknown"
