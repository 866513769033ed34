"""The suite kinds of lab.yaml `suites:`, run in the guest over a Remote.

pytest             the guest ioctl suite (tests/guest) with JUnit output
kselftest          each built KVM selftest with its own timeout; exit 4 = skip; KTAP
                   parsed per case where the test prints it
conversions-driver the tree's private_mem_conversions_test driver (.py or .sh), each
                   sub-run (backing source x vCPUs x memslots) its own result
command            an argv (test-only suites: a deliberate failure, a long sleep)

Every result goes to the Recorder the moment it is known. A suite that loses the VM
stops at once and says so (SuiteRun.lost); the runner decides what happens next.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Protocol

from harness import junit, ktap
from harness.config import SuiteSpec
from harness.errors import InfraError
from harness.names import slug
from harness.remote import Ran, Remote
from harness.results import Outcome, Recorder, TestResult

# Where things live in the guest (the VM's disk is a throwaway overlay).
GUEST_ROOT = "/var/tmp/gmemlab"
PAYLOAD = f"{GUEST_ROOT}/payload"
OUTPUT = f"{GUEST_ROOT}/out"
SELFTESTS = "selftests"

KSFT_SKIP = 4
DRIVER_NAMES = ("x86/private_mem_conversions_test.py", "x86/private_mem_conversions_test.sh")
DRIVER_BINARY = "x86/private_mem_conversions_test"
# The v3 driver's matrix per backing source (SERIES.md §4.2): (memslots, vCPUs).
DRIVER_MATRIX = ((1, 1), (1, 4), (4, 4))
_EXCERPT_LINES = 40


class Selftests(Protocol):
    """What the suites need from the build stage's KernelBuild."""

    @property
    def selftests_dir(self) -> Path: ...

    @property
    def selftests(self) -> Mapping[str, str]: ...


@dataclass
class SuiteRun:
    name: str
    seconds: float = 0.0
    # Wall time of the test commands themselves (not harness overhead).
    exec_seconds: float = 0.0
    results: list[TestResult] = field(default_factory=list)
    lost: bool = False
    lost_reason: str = ""
    note: str = ""


# A callback the runner gives: what happened to the kernel when SSH died (console scan).
LostClassifier = Callable[[], tuple[Outcome, str, str]]


@dataclass
class Context:
    remote: Remote
    recorder: Recorder
    build: Selftests | None
    repo_root: Path
    on_lost: LostClassifier


def _tail(text: str, lines: int = _EXCERPT_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


class _Suite:
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

    def exec(self, argv: list[str], timeout_s: float, log: Path, cwd: str) -> Ran:
        ran = self.ctx.remote.run(argv, timeout_s=timeout_s, cwd=cwd, log=log)
        self.run.exec_seconds += ran.seconds
        return ran

    def lost(self, test: str, ran: Ran, log: Path, remaining: list[str]) -> None:
        """The VM went away under `test`: crash if the console says so, else error."""
        outcome, reason, excerpt = self.ctx.on_lost()
        self.add(
            test,
            outcome,
            reason or f"connection lost: {ran.error}",
            seconds=ran.seconds,
            excerpt=excerpt or _tail(log.read_text(errors="replace")),
            log=self.ctx.recorder.relative(log),
        )
        for name in remaining:
            self.add(name, Outcome.MISSING, "not run: the VM was lost earlier in the suite")
        self.run.lost = True
        self.run.lost_reason = reason or ran.error


# --- pytest ----------------------------------------------------------------------------


def _pytest(s: _Suite) -> None:
    path = s.spec.path or "tests/guest"
    out = f"{OUTPUT}/{slug(s.name)}"
    xml = f"{out}/junit.xml"
    log = s.dir / "pytest.log"
    argv = [
        "sh",
        "-c",
        'mkdir -p "$1" && shift && exec "$@"',
        "sh",
        out,
        "python3",
        "-m",
        "pytest",
        path,
        "-p",
        "no:cacheprovider",
        "-rs",
        "-v",
        f"--junitxml={xml}",
    ]
    ran = s.exec(argv, s.spec.timeout_s, log, PAYLOAD)
    rel = s.ctx.recorder.relative(log)
    if ran.lost:
        s.lost(path, ran, log, [])
        return
    text = s.ctx.remote.read_text(xml)
    if text is not None:
        (s.dir / "junit.xml").write_text(text)
        try:
            parsed = junit.parse(text, s.name, log=rel)
        except junit.JUnitError as exc:
            s.add(path, Outcome.ERROR, f"unreadable JUnit from pytest: {exc}", log=rel)
            return
        for r in parsed:
            s.run.results.append(r)
            s.ctx.recorder.add(r)
        # The suite records its feature probe as JUnit properties: environment facts.
        probed = {
            f"guest probe: {k.removeprefix('gmemlab.')}": v
            for k, v in junit.properties(text).items()
        }
        if probed:
            s.ctx.recorder.environment(**probed)
            s.run.note = "the guest suite's feature probe is under Environment"
    if ran.timed_out:
        s.add(
            path,
            Outcome.TIMEOUT,
            f"pytest did not finish within {s.spec.timeout_s} s",
            seconds=ran.seconds,
            excerpt=_tail(ran.stdout),
            log=rel,
        )
    elif text is None:
        s.add(
            path,
            Outcome.MISSING,
            f"pytest wrote no JUnit file (exit {ran.exit_code})",
            seconds=ran.seconds,
            excerpt=_tail(ran.stdout + ran.stderr),
            log=rel,
        )
    elif ran.exit_code not in (0, 1):
        # 2 interrupted, 3 internal error, 4 usage error, 5 nothing collected.
        s.add(
            path,
            Outcome.ERROR,
            f"pytest exited {ran.exit_code}",
            excerpt=_tail(ran.stdout + ran.stderr),
            log=rel,
        )


# --- kselftest -------------------------------------------------------------------------


def _skip_reason(output: str) -> str:
    doc = ktap.parse(output)
    if doc.plan_skip:
        return doc.plan_skip.lstrip("- ")
    for line in reversed(output.splitlines()):
        if "SKIP" in line or "not met" in line or "not supported" in line:
            return line.strip().lstrip("#- ").strip()
    lines = [x for x in output.splitlines() if x.strip() and not x.startswith("$ ")]
    return lines[-1].strip() if lines else "exit 4 (KSFT_SKIP)"


def classify_selftest(name: str, ran: Ran, output: str, timeout_s: float) -> list[TestResult]:
    """Per-case results for one selftest run (suite and log are filled in by the caller).

    Where the test prints KTAP, each case is a row; the process' own verdict is added
    as a row only when it says something the cases do not. A stream cut short by a
    normal (non-zero) exit is the test aborting, a failure; a crash is only when the
    kernel went down, which the caller learns from the console and dmesg.
    """
    doc = ktap.parse(output)
    rows: list[TestResult] = []
    code = ran.exit_code
    if doc.plan == 0 and doc.plan_skip is not None:
        # "1..0 # SKIP reason": the whole test skipped itself.
        return [TestResult("", name, Outcome.SKIP, _skip_reason(output))]
    for path, case in doc.leaves():
        outcome, reason = case.outcome, case.reason
        if outcome is Outcome.CRASH:
            if ran.timed_out:
                outcome, reason = Outcome.TIMEOUT, f"still running after {timeout_s:.0f} s"
            else:
                outcome = Outcome.FAIL
                reason = f"the test exited ({code}) before reporting this case"
        excerpt = "\n".join(case.lines[-_EXCERPT_LINES:]) if outcome is not Outcome.PASS else ""
        rows.append(TestResult("", f"{name}::{path}", outcome, reason, excerpt=excerpt))
    any_bad = any(r.outcome not in (Outcome.PASS, Outcome.SKIP) for r in rows)
    tail = _tail(output)
    if ran.timed_out:
        if not any(r.outcome is Outcome.TIMEOUT for r in rows):
            rows.append(
                TestResult(
                    "", name, Outcome.TIMEOUT, f"no result within {timeout_s:.0f} s", excerpt=tail
                )
            )
    elif code == 0:
        if not rows:
            rows.append(TestResult("", name, Outcome.PASS))
    elif code == KSFT_SKIP:
        if not rows or all(r.outcome is Outcome.PASS for r in rows):
            rows.append(TestResult("", name, Outcome.SKIP, _skip_reason(output)))
    elif not any_bad:
        what = f"exit status {code}"
        # timeout(1) passes on 128+N for a child killed by signal N; KVM selftests
        # themselves exit 254 on a failed TEST_ASSERT, which is not a signal.
        if code is not None and 128 < code <= 128 + 64:
            what = f"killed by signal {code - 128}"
        rows.append(TestResult("", name, Outcome.FAIL, what, excerpt=tail))
    return rows


def _kselftest(s: _Suite) -> None:
    build = s.ctx.build
    names = list(s.spec.tests)
    for i, name in enumerate(names):
        status = build.selftests.get(name) if build is not None else None
        if build is None:
            s.add(name, Outcome.MISSING, "no build manifest: selftests unknown (pass --manifest)")
            continue
        if status == "absent":
            s.add(name, Outcome.SKIP, "not in this kernel tree")
            continue
        if status == "failed":
            s.add(name, Outcome.FAIL, "the selftest failed to build (see the build log)")
            continue
        if status != "built":
            s.add(name, Outcome.MISSING, "the build stage did not report this selftest")
            continue
        rel = PurePosixPath(name)
        log = s.dir / f"{slug(name)}.log"
        cwd = f"{PAYLOAD}/{SELFTESTS}/{rel.parent}".rstrip("/.")
        ran = s.exec([f"./{rel.name}"], s.spec.timeout_s, log, cwd)
        if ran.lost:
            s.lost(name, ran, log, names[i + 1 :])
            return
        output = log.read_text(errors="replace")
        for row in classify_selftest(name, ran, output, s.spec.timeout_s):
            s.add(
                row.name,
                row.outcome,
                row.reason,
                excerpt=row.excerpt,
                seconds=ran.seconds if row.name == name else 0.0,
                log=s.ctx.recorder.relative(log),
            )


# --- conversions-driver ----------------------------------------------------------------

_SUBRUN = re.compile(r"private_mem_conversions_test\S*\s+(?P<args>(?:-[smn]\s*\S+\s*)+)$")
_SKIPPING = re.compile(r"skipping (?P<src>\S+) backing source type")
_FAILED_FOR = re.compile(r"Test failed for source type '(?P<src>[^']+)'")


def _subrun_name(args: str) -> str:
    words = shlex.split(args)
    opts = dict(zip(words[::2], words[1::2], strict=False))
    return f"-s {opts.get('-s', 'default')} -m {opts.get('-m', '1')} -n {opts.get('-n', '1')}"


@dataclass
class _SubRun:
    name: str
    source: str
    lines: list[str] = field(default_factory=list)


def classify_driver(ran: Ran, output: str, timeout_s: float) -> list[TestResult]:
    """The driver prints each sub-run's command line before running it and stops at the
    first failure (SERIES.md §4.2), so every sub-run but the last passed and the last
    one carries the driver's exit status."""
    subs: list[_SubRun] = []
    rows: list[TestResult] = []
    for line in output.splitlines():
        body = line.strip()
        if body.startswith("$ "):
            continue
        if m := _SUBRUN.search(body):
            name = _subrun_name(m.group("args"))
            subs.append(_SubRun(name, name.split()[1]))
        elif m := _SKIPPING.search(body):
            rows.append(TestResult("", f"-s {m.group('src')}", Outcome.SKIP, body))
        elif subs:
            subs[-1].lines.append(line)
    code = ran.exit_code
    for i, sub in enumerate(subs):
        last = i == len(subs) - 1
        excerpt = "\n".join(sub.lines[-_EXCERPT_LINES:])
        if not last or (code == 0 and not ran.timed_out):
            rows.append(TestResult("", sub.name, Outcome.PASS))
        elif ran.timed_out:
            rows.append(
                TestResult(
                    "",
                    sub.name,
                    Outcome.TIMEOUT,
                    f"driver still running after {timeout_s:.0f} s",
                    excerpt=excerpt,
                )
            )
        elif code == KSFT_SKIP:
            rows.append(TestResult("", sub.name, Outcome.SKIP, _skip_reason("\n".join(sub.lines))))
        else:
            rows.append(
                TestResult("", sub.name, Outcome.FAIL, f"exit status {code}", excerpt=excerpt)
            )
    if subs and (code != 0 or ran.timed_out):
        # The driver stops at the first failure: say which of the sub-runs it
        # documents for that source never ran, instead of leaving them out.
        stopped = subs[-1]
        done = {sub.name for sub in subs}
        for memslots, vcpus in DRIVER_MATRIX:
            name = f"-s {stopped.source} -m {memslots} -n {vcpus}"
            if name not in done:
                reason = f"not run: the driver stopped after {stopped.name}"
                rows.append(TestResult("", name, Outcome.SKIP, reason))
    if not subs:
        if code == 0 and not ran.timed_out:
            rows.append(
                TestResult(
                    "",
                    "driver",
                    Outcome.MISSING,
                    "the driver exited 0 without running any sub-run",
                    excerpt=_tail(output),
                )
            )
        elif ran.timed_out:
            rows.append(
                TestResult(
                    "",
                    "driver",
                    Outcome.TIMEOUT,
                    f"no result within {timeout_s:.0f} s",
                    excerpt=_tail(output),
                )
            )
        elif code == KSFT_SKIP:
            rows.append(TestResult("", "driver", Outcome.SKIP, _skip_reason(output)))
        else:
            rows.append(
                TestResult(
                    "",
                    "driver",
                    Outcome.FAIL,
                    f"exit status {code} before any sub-run",
                    excerpt=_tail(output),
                )
            )
    return rows


def find_driver(build: Selftests | None) -> str | None:
    if build is None:
        return None
    # The build stage names the tree's driver when it found one; else look ourselves.
    named = getattr(build, "driver", None)
    if isinstance(named, str) and (build.selftests_dir / named).is_file():
        return named
    for name in DRIVER_NAMES:
        if (build.selftests_dir / name).is_file():
            return name
    return None


def _driver(s: _Suite) -> None:
    build = s.ctx.build
    driver = find_driver(build)
    if build is None:
        s.add("driver", Outcome.MISSING, "no build manifest: selftests unknown (pass --manifest)")
        return
    if driver is None:
        s.add(
            "driver",
            Outcome.SKIP,
            "this tree has no private_mem_conversions_test driver (.py/.sh; series only)",
        )
        return
    if build.selftests.get(DRIVER_BINARY) != "built":
        s.add(
            "driver",
            Outcome.FAIL,
            f"{DRIVER_BINARY} is {build.selftests.get(DRIVER_BINARY, 'unknown')}; "
            "the driver has nothing to run",
        )
        return
    rel = PurePosixPath(driver)
    interpreter = "python3" if rel.suffix == ".py" else "bash"
    log = s.dir / "driver.log"
    cwd = f"{PAYLOAD}/{SELFTESTS}/{rel.parent}"
    ran = s.exec([interpreter, f"./{rel.name}"], s.spec.timeout_s, log, cwd)
    if ran.lost:
        s.lost(driver, ran, log, [])
        return
    output = log.read_text(errors="replace")
    for row in classify_driver(ran, output, s.spec.timeout_s):
        s.add(
            row.name, row.outcome, row.reason, excerpt=row.excerpt, log=s.ctx.recorder.relative(log)
        )
    s.run.note = f"driver: {driver}"


# --- command ---------------------------------------------------------------------------


def _command(s: _Suite) -> None:
    if not s.spec.argv:
        raise InfraError(f"suite {s.name}: kind command needs argv", "add argv: [...] in lab.yaml")
    name = shlex.join(s.spec.argv)
    log = s.dir / "command.log"
    ran = s.exec(list(s.spec.argv), s.spec.timeout_s, log, PAYLOAD)
    rel = s.ctx.recorder.relative(log)
    if ran.lost:
        s.lost(name, ran, log, [])
    elif ran.timed_out:
        s.add(
            name,
            Outcome.TIMEOUT,
            f"still running after {s.spec.timeout_s} s",
            seconds=ran.seconds,
            excerpt=_tail(ran.stdout),
            log=rel,
        )
    elif ran.exit_code == 0:
        s.add(name, Outcome.PASS, seconds=ran.seconds, log=rel)
    elif ran.exit_code == KSFT_SKIP:
        s.add(name, Outcome.SKIP, _skip_reason(ran.stdout), seconds=ran.seconds, log=rel)
    else:
        s.add(
            name,
            Outcome.FAIL,
            f"exit status {ran.exit_code}",
            seconds=ran.seconds,
            excerpt=_tail(ran.stdout + ran.stderr),
            log=rel,
        )


_KINDS: dict[str, Callable[[_Suite], None]] = {
    "pytest": _pytest,
    "kselftest": _kselftest,
    "conversions-driver": _driver,
    "command": _command,
}


def run_suite(name: str, spec: SuiteSpec, ctx: Context) -> SuiteRun:
    suite = _Suite(name, spec, ctx)
    start = time.monotonic()
    try:
        _KINDS[spec.kind](suite)
    finally:
        suite.run.seconds = time.monotonic() - start
    return suite.run


def payload(
    suites: Mapping[str, SuiteSpec], build: Selftests | None, repo_root: Path
) -> list[tuple[Path, str]]:
    """What the chosen suites need in the guest, as (local path, name under PAYLOAD)."""
    items: dict[str, Path] = {}
    for spec in suites.values():
        if spec.kind == "pytest":
            path = spec.path or "tests/guest"
            items[path] = repo_root / path
        wanted: list[str] = []
        if spec.kind == "kselftest" and build is not None:
            wanted = [t for t in spec.tests if build.selftests.get(t) == "built"]
        if spec.kind == "conversions-driver" and (driver := find_driver(build)):
            wanted = [driver, DRIVER_BINARY]
        for test in wanted:
            assert build is not None
            local = build.selftests_dir / test
            if local.exists():
                items[f"{SELFTESTS}/{test}"] = local
    return [(local, arcname) for arcname, local in sorted(items.items())]
