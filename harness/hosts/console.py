"""A host's console, captured to console.log by a local command from lab.yaml.

Bare metal has no QEMU serial file: what a hung or panicking kernel printed is only on
the machine's console, reached through something like `ipmitool ... sol activate` or a
serial-console server. The command is an argv (never a shell line), started before the
kexec and stopped once the kernel answers SSH (or the boot deadline passed). The argv
itself is not written to the log: it may name a password file or an environment
variable (ipmitool -f / -E), and never should hold a secret itself.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from harness.errors import UserError
from harness.proc import kill_group


class ConsoleCapture:
    """Runs argv with its output appended to log; does nothing for an empty argv."""

    def __init__(self, argv: Sequence[str], log: Path, *, what: str = "console") -> None:
        self.argv = list(argv)
        self.log = log
        self.what = what
        self.proc: subprocess.Popen[bytes] | None = None
        self._sink: IO[bytes] | None = None

    def __enter__(self) -> ConsoleCapture:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if not self.argv:
            return
        if "/" not in self.argv[0] and shutil.which(self.argv[0]) is None:
            raise UserError(
                f"{self.what}: command {self.argv[0]!r} not found",
                "install it or fix the console command in lab.yaml",
            )
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._sink = self.log.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            stdout=self._sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def stop(self, grace_s: float = 3.0) -> int | None:
        """End the command (SIGTERM to its group, then SIGKILL); its exit status."""
        proc, self.proc = self.proc, None
        code = None
        if proc is not None:
            try:
                proc.send_signal(signal.SIGTERM)
                code = proc.wait(timeout=grace_s)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                kill_group(proc)
                code = proc.returncode
        if self._sink is not None:
            self._sink.close()
            self._sink = None
        return code

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""
