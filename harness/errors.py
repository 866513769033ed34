"""The two error families of the lab.

A UserError is the user's to fix (lab.yaml, arguments, a missing tool, an unreachable
source); an InfraError is the machinery failing (QEMU died, SSH lost, disk full). Both
carry a message that names the thing and the next step, and the CLI prints that message
without a traceback and maps the family to an exit code (DESIGN.md: 3 and 2). A
TreeError is neither: the kernel under test does not build or its series does not
apply, which is the lab's finding about the patch (exit 1).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from pathlib import Path


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


@dataclass(frozen=True)
class Finding:
    """One thing wrong with the kernel under test, found before it booted: a result."""

    suite: str  # "build" (the tree does not compile) or "series" (a patch does not apply)
    name: str
    reason: str
    excerpt: str = ""
    # The evidence on disk (a make log, git am's output), copied into the run folder.
    log: Path | None = None


class TreeError(LabError):
    """The kernel under test is at fault: its tree does not build, or its series does
    not apply. A finding about the patch (exit 1, like a failed test), not the lab's
    trouble; the runner turns its findings into fail results."""

    exit_code = 1

    def __init__(
        self,
        what: str,
        fix: str | None = None,
        *,
        findings: tuple[Finding, ...],
        patches: tuple[dict[str, object], ...] = (),
    ):
        self.findings = findings
        # A series from mail: every patch's status, for the report's Series section.
        self.patches = patches
        super().__init__(what, fix)
