"""Kind kselftest: each built KVM selftest with its own timeout; exit 4 = skip; KTAP
parsed per case where the test prints it."""

from __future__ import annotations

from pathlib import PurePosixPath

from harness import ktap
from harness.names import slug
from harness.remote import Ran
from harness.results import Outcome, TestResult
from harness.suites.base import (
    EXCERPT_LINES,
    KSFT_SKIP,
    NO_MANIFEST,
    Suite,
    selftest_cwd,
    skip_reason,
    tail,
)


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
        return [TestResult("", name, Outcome.SKIP, skip_reason(output))]
    for path, case in doc.leaves():
        outcome, reason = case.outcome, case.reason
        if outcome is Outcome.CRASH:
            if ran.timed_out:
                outcome, reason = Outcome.TIMEOUT, f"still running after {timeout_s:.0f} s"
            else:
                outcome = Outcome.FAIL
                reason = f"the test exited ({code}) before reporting this case"
        excerpt = "\n".join(case.lines[-EXCERPT_LINES:]) if outcome is not Outcome.PASS else ""
        rows.append(TestResult("", f"{name}::{path}", outcome, reason, excerpt=excerpt))
    any_bad = any(r.outcome not in (Outcome.PASS, Outcome.SKIP) for r in rows)
    last = tail(output)
    if ran.timed_out:
        if not any(r.outcome is Outcome.TIMEOUT for r in rows):
            rows.append(
                TestResult(
                    "", name, Outcome.TIMEOUT, f"no result within {timeout_s:.0f} s", excerpt=last
                )
            )
    elif code == 0:
        if not rows:
            rows.append(TestResult("", name, Outcome.PASS))
    elif code == KSFT_SKIP:
        if not rows or all(r.outcome is Outcome.PASS for r in rows):
            rows.append(TestResult("", name, Outcome.SKIP, skip_reason(output)))
    elif not any_bad:
        what = f"exit status {code}"
        # timeout(1) passes on 128+N for a child killed by signal N; KVM selftests
        # themselves exit 254 on a failed TEST_ASSERT, which is not a signal.
        if code is not None and 128 < code <= 128 + 64:
            what = f"killed by signal {code - 128}"
        rows.append(TestResult("", name, Outcome.FAIL, what, excerpt=last))
    return rows


def run(s: Suite) -> None:
    build = s.ctx.build
    names = list(s.spec.tests)
    for i, name in enumerate(names):
        status = build.selftests.get(name) if build is not None else None
        if build is None:
            s.add(name, Outcome.MISSING, NO_MANIFEST)
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
        log = s.dir / f"{slug(name)}.log"
        argv = [f"./{PurePosixPath(name).name}"]
        ran = s.exec(
            argv, s.spec.timeout_s, log, selftest_cwd(name), test=name, then=names[i + 1 :]
        )
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
