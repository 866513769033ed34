"""What every suite kind shares: guest paths, the run context and the per-suite runner.

The runner class records each result the moment it is known and turns a lost VM into
one classified result plus a "missing" row for every test that never ran.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Protocol, Unpack

from harness import interrupt, ktap
from harness.config import SuiteSpec
from harness.remote import Ran, RunOptions
from harness.results import Outcome, Recorder, TestResult

# Where things live in the guest (the VM's disk is a throwaway overlay).
GUEST_ROOT = "/var/tmp/gmemlab"
PAYLOAD = f"{GUEST_ROOT}/payload"
OUTPUT = f"{GUEST_ROOT}/out"
SELFTESTS = "selftests"

# kselftest's "skipped" exit status; the driver and command suites honour it too.
KSFT_SKIP = 4
EXCERPT_LINES = 40
# The kselftest and driver kinds both need the build's manifest to know what was built.
NO_MANIFEST = "no build manifest: selftests unknown (pass --manifest)"


class CommandRunner(Protocol):
    """Runs an argv on the other side: harness.remote.Remote's run, which both the
    suites (RemoteRunner) and the host stage (harness.hosts.shell.HostShell) use."""

    def run(self, argv: Sequence[str], **options: Unpack[RunOptions]) -> Ran: ...


class RemoteRunner(CommandRunner, Protocol):
    """What the suites need from the remote layer: harness.remote.Remote, or the unit
    tests' FakeRemote (a Protocol, so mypy checks the fake against the real signature)."""

    def read_text(self, path: str) -> str | None: ...


class Selftests(Protocol):
    """What the suites need from the build stage's KernelBuild (or the tests' FakeBuild)."""

    @property
    def selftests_dir(self) -> Path: ...

    @property
    def selftests(self) -> Mapping[str, str]: ...

    # The tree's conversions driver script, relative to selftests_dir, if it has one.
    @property
    def driver(self) -> str | None: ...


@dataclass
class SuiteRun:
    name: str
    seconds: float = 0.0
    # Wall time of the test commands themselves (not harness overhead).
    exec_seconds: float = 0.0
    results: list[TestResult] = field(default_factory=list)
    lost: bool = False
    lost_reason: str = ""
    # Ctrl-C/SIGTERM stopped the suite while a command ran (its rows say so).
    interrupted: bool = False
    note: str = ""


# A callback the runner gives: what happened to the kernel when SSH died (console scan).
LostClassifier = Callable[[], tuple[Outcome, str, str]]


@dataclass
class Context:
    remote: RemoteRunner
    recorder: Recorder
    build: Selftests | None
    repo_root: Path
    on_lost: LostClassifier


def selftest_cwd(name: str) -> str:
    """The guest folder a pushed selftest (or driver) runs in: the folder it is in."""
    return f"{PAYLOAD}/{SELFTESTS}/{PurePosixPath(name).parent}".rstrip("/.")


def tail(text: str, lines: int = EXCERPT_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def skip_reason(output: str) -> str:
    doc = ktap.parse(output)
    if doc.plan_skip:
        return doc.plan_skip.lstrip("- ")
    for line in reversed(output.splitlines()):
        if "SKIP" in line or "not met" in line or "not supported" in line:
            return line.strip().lstrip("#- ").strip()
    lines = [x for x in output.splitlines() if x.strip() and not x.startswith("$ ")]
    return lines[-1].strip() if lines else "exit 4 (KSFT_SKIP)"


class Suite:
    """Shared bookkeeping: record as we go, stop on a lost VM."""

    def __init__(self, name: str, spec: SuiteSpec, ctx: Context) -> None:
        self.name, self.spec, self.ctx = name, spec, ctx
        self.run = SuiteRun(name)
        self.dir = ctx.recorder.suite_dir(name)

    def add(
        self,
        name: str,
        outcome: Outcome,
        reason: str = "",
        *,
        seconds: float = 0.0,
        excerpt: str = "",
        log: str | None = None,
    ) -> None:
        result = TestResult(self.name, name, outcome, reason, seconds, excerpt, log)
        self.run.results.append(result)
        self.ctx.recorder.add(result)

    def add_ended(self, test: str, outcome: Outcome, reason: str, ran: Ran, log: str) -> None:
        """A verdict from how the command ended: its time and the tail of all it printed."""
        excerpt = tail(ran.stdout + ran.stderr)
        self.add(test, outcome, reason, seconds=ran.seconds, excerpt=excerpt, log=log)

    def add_timeout(self, test: str, reason: str, ran: Ran, log: str) -> None:
        """The command outlived its timeout: what it printed until then is the excerpt."""
        self.add(
            test, Outcome.TIMEOUT, reason, seconds=ran.seconds, excerpt=tail(ran.stdout), log=log
        )

    def exec(
        self,
        argv: list[str],
        timeout_s: float,
        log: Path,
        cwd: str,
        *,
        test: str | None = None,
        then: Sequence[str] = (),
        partial: Callable[[str], list[TestResult]] | None = None,
    ) -> Ran:
        """Run one command of the suite. If Ctrl-C/SIGTERM stops it, the suite records
        what it got as far as it went (partial: results read from the output so far),
        `test` (default: the command) as missing with the reason and its output, and
        every test in `then` as not run, before the interrupt goes on."""
        start = time.monotonic()
        try:
            ran = self.ctx.remote.run(argv, timeout_s=timeout_s, cwd=cwd, log=log)
        except KeyboardInterrupt as exc:
            seconds = time.monotonic() - start
            self.run.exec_seconds += seconds
            self.interrupted(test or shlex.join(argv), log, seconds, then, partial, exc)
            raise
        self.run.exec_seconds += ran.seconds
        return ran

    def interrupted(
        self,
        test: str,
        log: Path,
        seconds: float,
        then: Sequence[str],
        partial: Callable[[str], list[TestResult]] | None,
        exc: BaseException,
    ) -> None:
        why = interrupt.reason(exc)
        try:
            output = log.read_text(errors="replace")
        except OSError:
            output = ""
        rel = self.ctx.recorder.relative(log)
        got = partial(output) if partial is not None else []
        for r in got:
            self.add(r.name, r.outcome, r.reason, excerpt=r.excerpt, log=rel)
        self.add(
            test,
            Outcome.MISSING,
            f"{why} after {seconds:.1f} s, before it finished"
            + (f" ({len(got)} results read from its output so far)" if got else ""),
            seconds=seconds,
            excerpt=tail(output),
            log=rel,
        )
        for name in then:
            self.add(name, Outcome.MISSING, f"not run: {why}")
        self.run.interrupted = True

    def lost(self, test: str, ran: Ran, log: Path, remaining: list[str]) -> None:
        """The VM went away under `test`: crash if the console says so, else error."""
        outcome, reason, excerpt = self.ctx.on_lost()
        self.add(
            test,
            outcome,
            reason or f"connection lost: {ran.error}",
            seconds=ran.seconds,
            excerpt=excerpt or tail(log.read_text(errors="replace")),
            log=self.ctx.recorder.relative(log),
        )
        for name in remaining:
            self.add(name, Outcome.MISSING, "not run: the VM was lost earlier in the suite")
        self.run.lost = True
        self.run.lost_reason = reason or ran.error
