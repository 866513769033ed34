"""The two error families of the lab.

A UserError is the user's to fix (lab.yaml, arguments, a missing tool, an unreachable
source); an InfraError is the machinery failing (QEMU died, SSH lost, disk full). Both
carry a message that names the thing and the next step, and the CLI prints that message
without a traceback and maps the family to an exit code (DESIGN.md: 3 and 2).
"""

from __future__ import annotations


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
