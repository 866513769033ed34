"""The dmesg bracket around each suite: which kernel lines are new, and what they mean.

The runner takes dmesg before and after a suite; a WARN during a passing suite makes it
fail, a BUG/Oops/KASAN/UBSAN/panic is a crash (DESIGN.md, "Outcomes, never silent").
"""

from __future__ import annotations

from harness import crash, printk
from harness.results import Outcome, TestResult


def new_dmesg_lines(before: str, after: str) -> list[str]:
    """Lines in `after` printed since `before` was taken (printk timestamps, else diff)."""
    old = before.splitlines()
    stamps = [s for s in (printk.timestamp(x) for x in old) if s is not None]
    seen = set(old)
    if not stamps:
        return [x for x in after.splitlines() if x not in seen]
    last = max(stamps)
    fresh = []
    for line in after.splitlines():
        st = printk.timestamp(line)
        if (st is not None and st > last) or (st is None and line not in seen):
            fresh.append(line)
    return fresh


def dmesg_verdict(lines: list[str]) -> TestResult | None:
    """A new WARNING/BUG/Oops/KASAN/UBSAN/panic line fails the suite, lines quoted."""
    found = crash.scan("\n".join(lines), before=2, after=25)
    if not found:
        return None
    kinds = sorted({c.kind for c in found})
    outcome = Outcome.FAIL if kinds == ["warning"] else Outcome.CRASH
    return TestResult(
        suite="",
        name="dmesg",
        outcome=outcome,
        reason=f"new kernel {', '.join(kinds)} in dmesg during the suite: "
        f"{crash.strip_timestamp(found[0].line)}"[:300],
        excerpt=crash.report(found, limit=60),
    )
