"""JUnit XML: read what pytest writes in the guest, write the run's merged file.

The guest's file comes from our own suite in our own VM, so the standard library's
parser is enough; entity expansion is still refused (ElementTree does not fetch
external entities, and a bounded file size keeps a runaway document out).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path

from harness.results import Outcome, TestResult

MAX_JUNIT_BYTES = 32 * 1024 * 1024
_EXCERPT_CHARS = 4000


class JUnitError(ValueError):
    """The file is not JUnit XML we can read."""


def _name(case: ET.Element) -> str:
    classname = case.get("classname", "")
    name = case.get("name", "?")
    return f"{classname}::{name}" if classname else name


def parse(text: str, suite: str, log: str | None = None) -> list[TestResult]:
    """pytest's JUnit file -> one TestResult per <testcase>."""
    if len(text) > MAX_JUNIT_BYTES:
        raise JUnitError(f"JUnit file is larger than {MAX_JUNIT_BYTES} bytes")
    if "<!ENTITY" in text:
        raise JUnitError("JUnit file declares entities; refusing to expand them")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise JUnitError(f"not XML: {exc}") from None
    results: list[TestResult] = []
    for case in root.iter("testcase"):
        outcome, reason, excerpt = Outcome.PASS, "", ""
        # pytest writes at most one of these per testcase; an error in teardown of a
        # failed test is a second <testcase> with the same name.
        for tag, kind in (
            ("failure", Outcome.FAIL),
            ("error", Outcome.ERROR),
            ("skipped", Outcome.SKIP),
        ):
            node = case.find(tag)
            if node is not None:
                outcome = kind
                reason = (node.get("message") or "").strip()
                excerpt = (node.text or "").strip()
                break
        if outcome is Outcome.SKIP and node is not None and node.get("type") == "pytest.xfail":
            reason = f"expected failure (xfail): {reason}".rstrip(": ")
        results.append(
            TestResult(
                suite=suite,
                name=_name(case),
                outcome=outcome,
                reason=reason.splitlines()[0][:300] if reason else "",
                seconds=float(case.get("time") or 0.0),
                excerpt=excerpt[-_EXCERPT_CHARS:],
                log=log,
            )
        )
    return results


def properties(text: str) -> dict[str, str]:
    """The <property> entries pytest records (the guest suite stores its feature probe)."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return {}
    return {p.get("name", ""): p.get("value", "") for p in root.iter("property") if p.get("name")}


_ELEMENT = {
    Outcome.FAIL: ("failure", "fail"),
    Outcome.CRASH: ("failure", "crash"),
    Outcome.ERROR: ("error", "error"),
    Outcome.TIMEOUT: ("error", "timeout"),
    Outcome.MISSING: ("error", "missing"),
}


def write(results: Iterable[TestResult], path: Path, cell: str) -> None:
    """One <testsuite> per suite, with crash/timeout/missing told apart by type=."""
    by_suite: dict[str, list[TestResult]] = {}
    for r in results:
        by_suite.setdefault(r.suite, []).append(r)
    root = ET.Element("testsuites", name=f"gmemlab {cell}")
    for suite, rows in by_suite.items():
        failures = sum(1 for r in rows if _ELEMENT.get(r.outcome, ("",))[0] == "failure")
        errors = sum(1 for r in rows if _ELEMENT.get(r.outcome, ("",))[0] == "error")
        skipped = sum(1 for r in rows if r.outcome is Outcome.SKIP)
        node = ET.SubElement(
            root,
            "testsuite",
            name=f"{cell}.{suite}",
            tests=str(len(rows)),
            failures=str(failures),
            errors=str(errors),
            skipped=str(skipped),
            time=f"{sum(r.seconds for r in rows):.3f}",
        )
        for r in rows:
            case = ET.SubElement(
                node,
                "testcase",
                classname=f"{cell}.{suite}",
                name=r.name,
                time=f"{r.seconds:.3f}",
            )
            if r.outcome is Outcome.SKIP:
                ET.SubElement(case, "skipped", message=r.reason)
            elif r.outcome in _ELEMENT:
                tag, kind = _ELEMENT[r.outcome]
                child = ET.SubElement(case, tag, type=kind, message=r.reason or kind)
                child.text = r.excerpt
            if r.log:
                ET.SubElement(case, "system-out").text = f"raw output: {r.log}"
    _save(root, path)


def _save(root: ET.Element, path: Path) -> None:
    ET.indent(root)
    tmp = path.with_name(path.name + ".tmp")
    ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=True)
    tmp.replace(path)


def _problem_suite(cell: str, kind: str, message: str) -> ET.Element:
    """A <testsuite> standing for a cell that left no readable results."""
    node = ET.Element(
        "testsuite", name=cell, tests="1", failures="0", errors="1", skipped="0", time="0"
    )
    case = ET.SubElement(node, "testcase", classname=cell, name="results", time="0")
    ET.SubElement(case, "error", type=kind, message=message).text = message
    return node


def merge(files: list[tuple[str, Path]], path: Path, name: str, missing: list[str]) -> None:
    """One JUnit file from many cells' junit.xml (a CI's test view takes one file);
    a cell whose file is absent or unreadable, and each cell in `missing`, becomes an
    error testcase, so no cell disappears from the merged view."""
    root = ET.Element("testsuites", name=name)
    for cell, source in files:
        try:
            text = source.read_text()
            if len(text) > MAX_JUNIT_BYTES or "<!ENTITY" in text:
                raise JUnitError("too large or declares entities")
            top = ET.fromstring(text)
        except (OSError, ET.ParseError, JUnitError) as exc:
            root.append(_problem_suite(cell, "error", f"{cell}: no readable junit.xml ({exc})"))
            continue
        root.extend([top] if top.tag == "testsuite" else list(top.iter("testsuite")))
    for cell in missing:
        root.append(_problem_suite(cell, "missing", f"{cell}: no results (its job did not run)"))
    for attr in ("tests", "failures", "errors", "skipped"):
        root.set(attr, str(sum(int(s.get(attr) or 0) for s in root.iter("testsuite"))))
    _save(root, path)
