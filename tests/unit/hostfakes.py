"""Stand-ins for a host, for the host stage's tests (harness/hosts)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from harness.remote import Ran


class LocalShell:
    """A HostShell that runs argv on this machine: the host scripts for real, in a
    temporary folder instead of /run and /proc."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout_s: float,
        cwd: str | None = None,
        log: Path | None = None,
    ) -> Ran:
        self.calls.append(list(argv))
        start = time.monotonic()
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout_s, cwd=cwd, check=False
        )
        return Ran(
            " ".join(argv), done.returncode, done.stdout, done.stderr, time.monotonic() - start
        )

    def put(self, local: Path, remote_path: str) -> None:
        Path(remote_path).write_bytes(local.read_bytes())

    def close(self) -> None:
        pass


def fake_proc(root: Path, *, boot_id: str, uptime: float = 100.0, cmdline: str = "ro") -> str:
    """A folder shaped like the bits of /proc the host scripts read."""
    (root / "sys" / "kernel" / "random").mkdir(parents=True, exist_ok=True)
    (root / "sys" / "kernel" / "random" / "boot_id").write_text(boot_id + "\n")
    (root / "uptime").write_text(f"{uptime:.2f} 1234.00\n")
    (root / "cmdline").write_text(cmdline + "\n")
    return str(root)
