"""What the run's stages need from each other, as Protocols.

The runner composes stages; it never asks an earlier stage's result for more than these
Protocols promise. The real KernelBuild (harness/manifest.py) and the booted QEMU
Machine (harness/qemu/machine.py) implement them, and so do the unit tests' fakes,
so mypy checks the fakes against the same contract. A bare-metal host target
(harness/hosts/) is another BootedTarget.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from harness.crash import Crash
from harness.remote import Endpoint
from harness.suites.base import Selftests


class BuiltKernel(Selftests, Protocol):
    """A finished build: what boot, the suites and the report read from it."""

    @property
    def bzimage(self) -> Path: ...

    @property
    def vmlinux(self) -> Path:
        """A host target checks the deployed kernel's banner and build id against it."""
        ...

    @property
    def manifest(self) -> Path: ...

    @property
    def commit(self) -> str: ...

    @property
    def describe(self) -> str: ...

    @property
    def config_hash(self) -> str: ...

    @property
    def make_seconds(self) -> float: ...


class BootedTarget(Protocol):
    """A booted kernel the suites reach over SSH, with a console that tells the truth
    when SSH is gone."""

    @property
    def console_log(self) -> Path: ...

    @property
    def boot_seconds(self) -> float: ...

    def endpoint(self) -> Endpoint: ...

    def alive(self) -> bool: ...

    def wait_exit(self, timeout: float) -> int | None: ...

    def crash(self) -> list[Crash] | None: ...

    def health(self) -> str | None:
        """None while the target runs; else why it stopped answering, in words (QEMU
        killed by which signal, the guest paused on a disk error). Asked every few
        seconds while a command runs, so it must be quick."""
        ...

    def summary(self) -> str:
        """One line for the terminal: accelerator, nested KVM, boot time."""
        ...

    def environment(self) -> dict[str, object]:
        """What the report records about the target (accelerator, CPU model, ...)."""
        ...
