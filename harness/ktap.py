"""KTAP / TAP parser for kselftest output.

Handles KTAP version 1 and TAP 13/14 as the kernel prints them: nested subtests by
indentation (spaces or tabs; with optional "# Subtest:" names), SKIP/TODO/XFAIL directives, printk
timestamps, a missing plan and Bail out!. A stream that ends before its plan is
satisfied (or inside a subtest) is a crash, never a pass: the case that was running gets
outcome crash and the planned cases that never started are missing (kunit_parser.py does
the same for the kernel's own KUnit logs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from harness import printk
from harness.results import Outcome

_VERSION = re.compile(r"^(?:K?TAP) version (\d+)$")
_PLAN = re.compile(r"^1\.\.(\d+)(?:\s*#\s*(.*))?$")
_RESULT = re.compile(
    r"^(?P<ok>not ok|ok)\s+(?P<num>\d+)\s*(?:-\s*)?(?P<name>[^#]*?)\s*"
    r"(?:#\s*(?P<directive>[A-Za-z]+)\b\s*(?P<reason>.*))?$"
)
_SUBTEST = re.compile(r"^#\s*Subtest:\s*(.+)$")
_BAIL = re.compile(r"^Bail out!\s*(.*)$")
# kselftest_harness.h announces each case before running it: "#  RUN   fixture.case ..."
_RUN = re.compile(r"^#\s+RUN\s+(\S+)")


@dataclass
class TapCase:
    number: int
    name: str
    outcome: Outcome
    reason: str = ""
    directive: str | None = None
    # Diagnostic lines printed at this level since the previous result.
    lines: list[str] = field(default_factory=list)
    subtests: list[TapCase] = field(default_factory=list)


@dataclass
class TapDoc:
    found: bool = False
    version: str | None = None
    plan: int | None = None
    plan_skip: str | None = None
    cases: list[TapCase] = field(default_factory=list)
    truncated: bool = False
    missing_plan: bool = False
    bail_out: str | None = None

    def leaves(self) -> list[tuple[str, TapCase]]:
        """Every reportable case with its path name ("parent::child" for nested ones).

        A parent is reported by its subtests, plus itself when its own verdict says
        something the subtests do not (it failed although every subtest passed).
        """
        out: list[tuple[str, TapCase]] = []

        def walk(prefix: str, cases: list[TapCase]) -> None:
            for case in cases:
                path = f"{prefix}::{case.name}" if prefix else case.name
                if not case.subtests:
                    out.append((path, case))
                    continue
                walk(path, case.subtests)
                child_bad = any(
                    c.outcome not in (Outcome.PASS, Outcome.SKIP) for c in case.subtests
                )
                if case.outcome not in (Outcome.PASS, Outcome.SKIP) and not child_bad:
                    out.append((path, case))

        walk("", self.cases)
        return out


def _outcome(ok: bool, directive: str | None) -> Outcome:
    d = (directive or "").upper()
    if d == "SKIP":
        return Outcome.SKIP
    if d == "TODO" and not ok:
        # A known, tolerated failure (TAP): reported with its reason, not as a failure.
        return Outcome.SKIP
    return Outcome.PASS if ok else Outcome.FAIL


@dataclass
class _Level:
    indent: int
    version: str | None = None
    plan: int | None = None
    plan_skip: str | None = None
    name: str | None = None
    cases: list[TapCase] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    # The last closed nested level: its cases belong to the next result at this level.
    child: _Level | None = None
    running: str | None = None
    truncated: bool = False


def _indent(line: str) -> int:
    """Leading whitespace in columns. KTAP nests by 4 spaces a level; some tests (and
    older KUnit) indent with a tab instead, which counts as one level, so tab-indented
    subtests nest rather than overwrite their parent's plan."""
    lead = line[: len(line) - len(line.lstrip(" \t"))]
    return len(lead.expandtabs(4))


def _strip(raw: str) -> str:
    return printk.strip_timestamp(raw.rstrip("\r\n")).rstrip()


def _finish(level: _Level, ended: bool) -> None:
    """Close a level; if the stream ended before its plan was met, mark what is absent."""
    seen = len(level.cases)
    expected = level.plan
    if not ended:
        return
    if expected is not None and seen >= expected and level.child is None:
        return
    if expected is None and level.child is None and level.running is None:
        return
    level.truncated = True
    number = seen + 1
    name = level.running or (level.child.name if level.child else None) or f"test {number}"
    crash = TapCase(
        number,
        name,
        Outcome.CRASH,
        reason="output ended before this test's result (truncated stream)",
        lines=level.pending,
        subtests=level.child.cases if level.child else [],
    )
    level.cases.append(crash)
    for n in range(number + 1, (expected or 0) + 1):
        level.cases.append(
            TapCase(n, f"test {n}", Outcome.MISSING, reason="planned but never reported")
        )


def parse(text: str) -> TapDoc:
    doc = TapDoc()
    stack: list[_Level] = [_Level(indent=0)]
    for raw in text.splitlines():
        line = _strip(raw)
        body = line.strip()
        if not body:
            continue
        indent = _indent(line)
        structural = bool(_VERSION.match(body) or _PLAN.match(body) or _RESULT.match(body))
        is_subtest = bool(_SUBTEST.match(body))
        top = stack[-1]
        if indent > top.indent and (structural or is_subtest):
            stack.append(_Level(indent=indent))
        while len(stack) > 1 and indent < stack[-1].indent and structural:
            closed = stack.pop()
            _finish(closed, ended=False)
            stack[-1].child = closed
        level = stack[-1]

        if m := _VERSION.match(body):
            doc.found = True
            level.version = m.group(1)
        elif m := _PLAN.match(body):
            doc.found = True
            level.plan = int(m.group(1))
            if m.group(2) and m.group(2).upper().startswith("SKIP"):
                level.plan_skip = m.group(2)[4:].strip() or "skipped"
        elif m := _RESULT.match(body):
            doc.found = True
            ok = m.group("ok") == "ok"
            directive = m.group("directive")
            name = m.group("name").strip() or (level.child.name if level.child else None)
            child = level.child
            case = TapCase(
                number=int(m.group("num")),
                name=name or f"test {m.group('num')}",
                outcome=_outcome(ok, directive),
                reason=(m.group("reason") or "").strip(),
                directive=directive.upper() if directive else None,
                lines=level.pending,
                subtests=child.cases if child else [],
            )
            if child is not None and child.truncated and case.outcome is Outcome.PASS:
                case.outcome = Outcome.CRASH
            level.cases.append(case)
            level.pending, level.child, level.running = [], None, None
        elif m := _SUBTEST.match(body):
            level.name = m.group(1).strip()
        elif m := _BAIL.match(body):
            doc.found = True
            doc.bail_out = m.group(1).strip() or "Bail out!"
            break
        else:
            if m := _RUN.match(body):
                level.running = m.group(1)
            level.pending.append(body)

    # The stream ended: close every open level from the innermost out.
    while len(stack) > 1:
        closed = stack.pop()
        _finish(closed, ended=True)
        stack[-1].child = closed
        stack[-1].running = stack[-1].running or closed.name
    root = stack[0]
    if doc.bail_out is not None:
        root.cases.append(
            TapCase(
                len(root.cases) + 1,
                "bail out",
                Outcome.FAIL,
                reason=doc.bail_out,
                lines=root.pending,
            )
        )
    else:
        _finish(root, ended=True)
    doc.version = root.version
    doc.plan = root.plan
    doc.plan_skip = root.plan_skip
    doc.cases = root.cases
    doc.truncated = root.truncated
    doc.missing_plan = doc.found and root.plan is None
    if root.plan == 0 and root.plan_skip and not root.cases:
        doc.cases = [TapCase(1, "(all)", Outcome.SKIP, reason=root.plan_skip)]
    return doc
