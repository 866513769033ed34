"""Following console.log while a VM boots: new crash lines and the time of the last output."""

from __future__ import annotations

import time
from pathlib import Path

from harness import crash


class ConsoleWatch:
    """Follows console.log: new crash lines and the time of the last output."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = ""
        self.last_output = time.monotonic()
        self.first_crash_at: float | None = None

    def poll(self) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        if not data:
            return
        self.offset += len(data)
        self.last_output = time.monotonic()
        lines = (self.partial + data.decode(errors="replace")).split("\n")
        self.partial = lines.pop()
        if self.first_crash_at is None and any(crash.is_fatal(ln) for ln in lines):
            self.first_crash_at = time.monotonic()
