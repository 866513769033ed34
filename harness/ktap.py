"""KTAP / TAP parser for kselftest output.

Handles KTAP version 1 and TAP 13/14 as the kernel prints them: nested subtests by
indentation (spaces or tabs; with optional "# Subtest:" names), SKIP/TODO/XFAIL directives, printk
timestamps, a missing plan and Bail out!. A stream that ends before its plan is
satisfied (or inside a subtest) is a crash, never a pass: the case that was running gets
outcome crash and the planned cases that never started are missing (kunit_parser.py does
the same for the kernel's own KUnit logs).

kselftest_harness.h runs each case in a fork, and a child may print TAP of its own at the
parent's indentation before the parent's `ok N`: ksft_exit_skip() prints `1..0 # SKIP why`
(or `ok N # SKIP why` when it inherited the plan). A second header or plan at one level is
such a child's stream: its cases become the next result's subtests, never the level's plan.
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
    """One stream being read: the top, an indented subtest, or a child's inline stream."""

    indent: int
    # A stream a child process printed at its parent's indentation (kselftest_harness
    # runs each case in a fork): it ends when its plan is met or its numbering breaks.
    inline: bool = False
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

    def next_number(self) -> int:
        return self.cases[-1].number + 1 if self.cases else 1

    def started(self) -> bool:
        return self.plan is not None or bool(self.cases)


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
    child = level.child
    if child is not None and child.inline and not child.cases and not child.truncated:
        child = None  # a child's header or skip plan alone leaves nothing unreported
    if expected is not None and seen >= expected and child is None:
        return
    if expected is None and child is None and level.running is None:
        return
    level.truncated = True
    number = seen + 1
    name = level.running or (child.name if child else None) or f"test {number}"
    crash = TapCase(
        number,
        name,
        Outcome.CRASH,
        reason="output ended before this test's result (truncated stream)",
        lines=level.pending,
        subtests=child.cases if child else [],
    )
    level.cases.append(crash)
    for n in range(number + 1, (expected or 0) + 1):
        level.cases.append(
            TapCase(n, f"test {n}", Outcome.MISSING, reason="planned but never reported")
        )


def _vague(reason: str) -> bool:
    # kselftest_harness says "unknown" when a case exited KSFT_SKIP without SKIP().
    return reason in ("", "unknown")


class _Parser:
    """Reads a stream line by line onto a stack of levels, the top level at the bottom."""

    def __init__(self) -> None:
        self.doc = TapDoc()
        self.stack = [_Level(indent=0)]

    def feed(self, line: str) -> bool:
        """Read one line; False once the stream has bailed out."""
        body = line.strip()
        if not body:
            return True
        version, plan, result = _VERSION.match(body), _PLAN.match(body), _RESULT.match(body)
        subtest = _SUBTEST.match(body)
        structural = bool(version or plan or result)
        self._nest(_indent(line), structural, bool(subtest))
        level = self.stack[-1]
        if version:
            if level.started():
                # A second header at one level: a child process' own stream begins.
                level = self._push_inline(level)
            level.version = version.group(1)
        elif plan:
            self._plan(level, int(plan.group(1)), plan.group(2))
        elif result:
            self._result(result)
        elif subtest:
            level.name = subtest.group(1).strip()
        elif bail := _BAIL.match(body):
            self.doc.bail_out = bail.group(1).strip() or "Bail out!"
        else:
            if run := _RUN.match(body):
                level.running = run.group(1)
            level.pending.append(body)
        self.doc.found = self.doc.found or structural or self.doc.bail_out is not None
        return self.doc.bail_out is None

    def _nest(self, indent: int, structural: bool, subtest: bool) -> None:
        if indent > self.stack[-1].indent and (structural or subtest):
            self.stack.append(_Level(indent=indent))
        while len(self.stack) > 1 and indent < self.stack[-1].indent and structural:
            self._pop(ended=False)

    def _pop(self, ended: bool) -> _Level:
        closed = self.stack.pop()
        _finish(closed, ended)
        self.stack[-1].child = closed
        return closed

    def _push_inline(self, parent: _Level) -> _Level:
        level = _Level(indent=parent.indent, inline=True)
        self.stack.append(level)
        return level

    def _close_met_inline(self) -> None:
        while self.stack[-1].inline:
            level = self.stack[-1]
            if level.plan is None or len(level.cases) < level.plan:
                return
            self._pop(ended=False)

    def _plan(self, level: _Level, planned: int, comment: str | None) -> None:
        # A plan where this level already has one, or one smaller than what it has
        # already reported, is not this level's (a trailing plan counts what ran): a
        # child printed it, e.g. ksft_exit_skip() in a forked case: "1..0 # SKIP why".
        if level.plan is not None and len(level.cases) >= level.plan and planned == level.plan:
            return  # the same plan again once it is met (a trailing repeat): nothing new
        if level.plan is not None or planned < len(level.cases):
            level = self._push_inline(level)
        level.plan = planned
        if comment and comment.upper().startswith("SKIP"):
            level.plan_skip = comment[4:].strip() or "skipped"
        self._close_met_inline()

    def _result(self, m: re.Match[str]) -> None:
        number = int(m.group("num"))
        while self.stack[-1].inline and number != self.stack[-1].next_number():
            # The child's stream stopped short; this result is its parent's.
            self._pop(ended=True)
        level = self.stack[-1]
        ok = m.group("ok") == "ok"
        directive = m.group("directive")
        child = level.child
        case = TapCase(
            number=number,
            name=m.group("name").strip() or (child.name if child else None) or f"test {number}",
            outcome=_outcome(ok, directive),
            reason=(m.group("reason") or "").strip(),
            directive=directive.upper() if directive else None,
            lines=level.pending,
            subtests=child.cases if child else [],
        )
        if child is not None and child.truncated and case.outcome is Outcome.PASS:
            case.outcome = Outcome.CRASH
        if child is not None and child.plan_skip and _vague(case.reason):
            case.reason = child.plan_skip if case.outcome is Outcome.SKIP else case.reason
        before = level.cases[-1] if level.cases else None
        if child is None and before is not None and before.number == number:
            # The same number twice: a forked case's own "ok N # SKIP why" (a child that
            # inherited the plan), then the harness' verdict on it. The later one counts.
            level.cases.pop()
            case.lines = before.lines + case.lines
            if _vague(case.reason) and before.outcome is case.outcome:
                case.reason = before.reason
        level.cases.append(case)
        level.pending, level.child, level.running = [], None, None
        self._close_met_inline()

    def finish(self) -> TapDoc:
        """The stream ended: close every open level from the innermost out."""
        doc = self.doc
        while len(self.stack) > 1:
            closed = self._pop(ended=True)
            self.stack[-1].running = self.stack[-1].running or closed.name
        root = self.stack[0]
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


def parse(text: str) -> TapDoc:
    parser = _Parser()
    for raw in text.splitlines():
        if not parser.feed(_strip(raw)):
            break
    return parser.finish()
