"""Following console.log while a VM boots."""

from __future__ import annotations

from pathlib import Path

from harness.qemu.console import ConsoleWatch


def test_console_watch_sees_fatal_lines_across_partial_writes(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    watch = ConsoleWatch(log)
    watch.poll()  # no file yet
    log.write_text("[ 0.1] WARNING: CPU: 0 PID: 1 at x.c:1 f+0x0/0x1\n[ 0.2] Kernel pa")
    watch.poll()
    assert watch.first_crash_at is None  # a WARN is reported later, not a boot failure
    with log.open("a") as f:
        f.write("nic - not syncing: oops\n")
    watch.poll()
    assert watch.first_crash_at is not None
