"""One cell's run in progress: its recorder, its terminal, and what the stages have
produced so far (a build, a booted target, an SSH session), typed by harness/targets.py.

The stage functions (harness/run_stages.py, harness/run_suites.py) take a CellRun and
fill in its next field; the runner (harness/runner.py) only orders them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import crash
from harness.progress import Progress
from harness.remote import Remote
from harness.results import Outcome, Recorder
from harness.targets import BootedTarget, BuiltKernel

CLEAR_WARN_ONCE = "echo 1 > /sys/kernel/debug/clear_warn_once 2>/dev/null || true"


@dataclass
class CellRun:
    rec: Recorder
    progress: Progress
    build: BuiltKernel | None = None
    target: BootedTarget | None = None
    remote: Remote | None = None
    # Why the VM (or host) stopped answering, once it did: the run's incomplete reason.
    lost_reason: str = ""
    notes: dict[str, str] = field(default_factory=dict)

    @contextlib.contextmanager
    def stage(self, name: str, detail: str = "") -> Iterator[dict[str, Any]]:
        """A timed stage: a line when it starts, a line when it ends, an entry in
        summary.json either way (the recorder marks it failed or interrupted).

        The end line says the stage's verdict when the caller set one (a suite's
        outcome: `timeout`, `crash`, never a bare `ok` for those), else ok."""
        self.progress.say(f"[{name}] {detail}".rstrip())
        with self.rec.stage(name) as entry:
            yield entry
        verdict = entry.get("verdict", "ok")
        self.progress.say(
            f"[{name}] {verdict} in {entry['seconds']:.1f}s {entry.get('note', '')}".rstrip()
        )

    def dmesg(self) -> str | None:
        """The guest's dmesg, or None when it no longer answers."""
        assert self.remote is not None
        ran = self.remote.run(["dmesg"], timeout_s=60)
        return ran.stdout if ran.exit_code == 0 and not ran.lost else None

    def rearm_warn_once(self) -> None:
        """Re-arm the kernel's WARN_ON_ONCE/printk_once flags before a suite.

        A *_ONCE warning fires once per boot: without this, the suite that happens to run
        first takes every such warning and a later suite hitting the same bug passes
        clean (`lab mutate` would credit the kill to whichever suite ran first). Writing
        debugfs's clear_warn_once (Linux 4.15+) makes each suite's dmesg bracket see its
        own warnings. Best effort: no debugfs, no re-arming, the bracket works as before.
        """
        assert self.remote is not None
        self.remote.run(["sh", "-c", CLEAR_WARN_ONCE], timeout_s=30)

    def on_lost(self) -> tuple[Outcome, str, str]:
        """SSH died: let the target finish dying, then ask the console what happened.

        A target that is still running and healthy may be panicking (the console is
        still being written): wait for it to exit. A paused one will not exit: no wait.
        """
        t = self.target
        assert t is not None
        state: str | None = None
        with contextlib.suppress(Exception):
            if t.health() is None and t.alive():
                t.wait_exit(10)
            state = t.health()
        found = t.crash() or []
        if found:
            self.lost_reason = f"kernel crash: {found[0].describe()}"
            return Outcome.CRASH, self.lost_reason, crash.report(found, limit=60)
        if state is None:
            state = "QEMU is still running" if t.alive() else "QEMU exited"
        self.lost_reason = f"the VM went away without a crash on the console ({state})"
        return Outcome.ERROR, self.lost_reason, console_tail(t.console_log)


def console_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
