"""Kernel crash patterns: the one place that decides what on a console or in dmesg is a crash.

Used on the serial console while a VM boots and runs (harness/qemu/) and on dmesg after
a suite (the results stage). Every line is checked against the patterns in order and
gets at most one kind, so "BUG: KASAN: ..." is a KASAN report, not also a plain BUG.
Tested against real console logs in tests/unit/golden/console/.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness import printk

# (kind, pattern). Order matters: the more specific kinds come before the general ones.
PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(rx))
    for kind, rx in (
        ("panic", r"Kernel panic - not syncing"),
        ("kasan", r"\bKASAN: "),
        ("ubsan", r"\bUBSAN: "),
        ("soft-lockup", r"\bBUG: soft lockup\b"),
        ("hung-task", r"\bINFO: task \S+ blocked for more than \d+ seconds"),
        ("rcu-stall", r"\brcu: INFO: \w+ (self-)?detected stalls?\b|\bdetected stalls? on CPUs?"),
        ("gpf", r"\bgeneral protection fault\b"),
        ("oops", r"\bOops: "),
        ("bug", r"\bBUG: |\bkernel BUG at "),
        # Only the kernel's own WARN forms; "WARNING:" alone is common in user-space output.
        # Before 7.x: "WARNING: CPU: 1 PID: 0 at file.c:350 func+0x6a/0x70"; since:
        # "WARNING: file.c:10 at func+0x27/0xff0 [mod], CPU#1: insmod/124".
        (
            "warning",
            r"\bWARNING: (CPU: \d+ PID: \d+|at \S|\S+:\d+ at \S|possible \w"
            r"|suspicious RCU usage|bad unlock balance|lock held)",
        ),
    )
)

# The kinds after which the kernel is not worth talking to: a boot that shows one has
# failed. The others (WARN, KASAN, lockups ...) are reported, and the results stage
# decides, since the guest usually runs on.
FATAL_KINDS = frozenset({"panic", "oops", "bug", "gpf"})

# printk's "[   12.345678] " prefix, and the carriage returns a serial console adds.


@dataclass(frozen=True)
class Crash:
    kind: str
    line_no: int  # 1-based, in the scanned text
    line: str
    # The matched line with lines before and after, as they appeared.
    context: tuple[str, ...]

    def describe(self) -> str:
        return f"{self.kind} at line {self.line_no}: {strip_timestamp(self.line)}"


def strip_timestamp(line: str) -> str:
    return printk.strip_timestamp(line.strip())


def classify(line: str) -> str | None:
    """The crash kind of one line, or None."""
    for kind, pattern in PATTERNS:
        if pattern.search(line):
            return kind
    return None


def is_fatal(line: str) -> bool:
    return classify(line) in FATAL_KINDS


def scan(text: str, *, before: int = 2, after: int = 20) -> list[Crash]:
    """Every crash line in text, each with its context."""
    lines = [line.rstrip("\r") for line in text.splitlines()]
    found = []
    for index, line in enumerate(lines):
        kind = classify(line)
        if kind is None:
            continue
        context = tuple(lines[max(0, index - before) : index + after + 1])
        found.append(Crash(kind, index + 1, line, context))
    return found


def report(crashes: list[Crash], *, limit: int = 40) -> str:
    """The first crash's context and a one-line list of the rest, for error messages."""
    if not crashes:
        return ""
    first = crashes[0]
    lines = [f"{first.describe()}", *(f"    {c}" for c in first.context)]
    rest = crashes[1:]
    if rest:
        kinds = ", ".join(f"{c.kind}@{c.line_no}" for c in rest[:10])
        more = f" and {len(rest) - 10} more" if len(rest) > 10 else ""
        lines.append(f"  also: {kinds}{more}")
    return "\n".join(lines[:limit])
