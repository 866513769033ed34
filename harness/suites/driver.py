"""Kind conversions-driver: the tree's private_mem_conversions_test driver (.py or .sh),
each sub-run (backing source x vCPUs x memslots) its own result."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from harness.kselftest_build import DRIVER_BINARY, DRIVERS
from harness.remote import Ran
from harness.results import Outcome, TestResult
from harness.suites.base import (
    EXCERPT_LINES,
    KSFT_SKIP,
    NO_MANIFEST,
    Selftests,
    Suite,
    selftest_cwd,
    skip_reason,
    tail,
)

# The v3 driver's matrix per backing source (SERIES.md §4.2): (memslots, vCPUs).
DRIVER_MATRIX = ((1, 1), (1, 4), (4, 4))

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
        excerpt = "\n".join(sub.lines[-EXCERPT_LINES:])
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
            rows.append(TestResult("", sub.name, Outcome.SKIP, skip_reason("\n".join(sub.lines))))
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
                    excerpt=tail(output),
                )
            )
        elif ran.timed_out:
            rows.append(
                TestResult(
                    "",
                    "driver",
                    Outcome.TIMEOUT,
                    f"no result within {timeout_s:.0f} s",
                    excerpt=tail(output),
                )
            )
        elif code == KSFT_SKIP:
            rows.append(TestResult("", "driver", Outcome.SKIP, skip_reason(output)))
        else:
            rows.append(
                TestResult(
                    "",
                    "driver",
                    Outcome.FAIL,
                    f"exit status {code} before any sub-run",
                    excerpt=tail(output),
                )
            )
    return rows


def find_driver(build: Selftests | None) -> str | None:
    if build is None:
        return None
    # The build stage names the tree's driver when it found one; else look ourselves.
    if build.driver is not None and (build.selftests_dir / build.driver).is_file():
        return build.driver
    for name in DRIVERS:
        if (build.selftests_dir / name).is_file():
            return name
    return None


def finished_subruns(output: str) -> list[TestResult]:
    """The sub-runs a driver stopped part-way (Ctrl-C) had finished: all but the one it
    was running passed (the driver stops at the first failure), and its skips."""
    rows = classify_driver(Ran("", 0, output, "", 0.0), output, 0)
    last = next((i for i in range(len(rows) - 1, -1, -1) if rows[i].outcome is Outcome.PASS), None)
    return [r for i, r in enumerate(rows) if i != last]


def run(s: Suite) -> None:
    build = s.ctx.build
    driver = find_driver(build)
    if build is None:
        s.add("driver", Outcome.MISSING, NO_MANIFEST)
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
    argv = [interpreter, f"./{rel.name}"]
    ran = s.exec(
        argv, s.spec.timeout_s, log, selftest_cwd(driver), test=driver, partial=finished_subruns
    )
    if ran.lost:
        s.lost(driver, ran, log, [])
        return
    output = log.read_text(errors="replace")
    for row in classify_driver(ran, output, s.spec.timeout_s):
        s.add(
            row.name, row.outcome, row.reason, excerpt=row.excerpt, log=s.ctx.recorder.relative(log)
        )
    s.run.note = f"driver: {driver}"
