"""The two error families of the lab.

A UserError is the user's to fix (lab.yaml, arguments, a missing tool, an unreachable
source); an InfraError is the machinery failing (QEMU died, SSH lost, disk full). Both
carry a message that names the thing and the next step, and the CLI prints that message
without a traceback and maps the family to an exit code (DESIGN.md: 3 and 2).
"""

from __future__ import annotations

import errno


class LabError(Exception):
    """Base of the expected failures; never shown with a traceback."""

    exit_code = 2

    def __init__(self, what: str, fix: str | None = None) -> None:
        self.what = what
        self.fix = fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return f"{self.what}\n  -> {self.fix}" if self.fix else self.what


class UserError(LabError):
    """The user's input is wrong: bad lab.yaml, bad arguments, a missing tool."""

    exit_code = 3


class InfraError(LabError):
    """The infrastructure failed: QEMU died, SSH was lost, the disk is full."""

    exit_code = 2


def os_error(exc: OSError) -> InfraError:
    """An OSError no stage turned into a LabError: disk full, permissions, a vanished file."""
    where = f" ({exc.filename})" if exc.filename else ""
    what = f"{exc.strerror or exc}{where}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InfraError(f"disk full: {what}", "free space there (df -h), then run again")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return InfraError(
            f"not permitted: {what}",
            "check the owner and mode of that path; LAB_CACHE=DIR moves the cache",
        )
    return InfraError(f"system error: {what}", "see the path named; then run again")
