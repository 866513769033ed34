"""pytest JUnit in, merged JUnit out."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness import junit
from harness.results import Outcome, TestResult

PYTEST_XML = """<?xml version="1.0" encoding="utf-8"?>
<testsuites name="pytest tests"><testsuite name="pytest" errors="1" failures="1"
 skipped="2" tests="5" time="3.2">
<testcase classname="guest.test_gmem" name="test_create" time="0.10"/>
<testcase classname="guest.test_gmem" name="test_convert" time="0.50">
 <failure message="AssertionError: expected EINVAL&#10;second line">
 tests/guest/test_gmem.py:40: AssertionError</failure></testcase>
<testcase classname="guest.test_gmem" name="test_preserve" time="0.01">
 <skipped type="pytest.skip" message="KVM_SET_MEMORY_ATTRIBUTES2 not supported (ENOTTY)">
 skip</skipped></testcase>
<testcase classname="guest.test_gmem" name="test_xf" time="0.01">
 <skipped type="pytest.xfail" message="known v3 bug"/></testcase>
<testcase classname="guest.test_gmem" name="test_fixture" time="0.0">
 <error message="failed on setup with OSError">trace</error></testcase>
</testsuite></testsuites>
"""


def test_parse_pytest_junit() -> None:
    results = junit.parse(PYTEST_XML, "gmem-ioctl", log="cell/gmem-ioctl/pytest.log")
    got = {r.name.split("::")[1]: (r.outcome, r.reason) for r in results}
    assert got == {
        "test_create": (Outcome.PASS, ""),
        "test_convert": (Outcome.FAIL, "AssertionError: expected EINVAL"),
        "test_preserve": (
            Outcome.SKIP,
            "KVM_SET_MEMORY_ATTRIBUTES2 not supported (ENOTTY)",
        ),
        "test_xf": (Outcome.SKIP, "expected failure (xfail): known v3 bug"),
        "test_fixture": (Outcome.ERROR, "failed on setup with OSError"),
    }
    failed = next(r for r in results if r.outcome is Outcome.FAIL)
    assert "test_gmem.py:40" in failed.excerpt and failed.seconds == 0.5


@pytest.mark.parametrize("text", ["not xml", '<!DOCTYPE x [<!ENTITY a "b">]><testsuites/>'])
def test_parse_rejects_bad_input(text: str) -> None:
    with pytest.raises(junit.JUnitError):
        junit.parse(text, "s")


def test_write_merged(tmp_path: Path) -> None:
    results = [
        TestResult("kselftests", "guest_memfd_test", Outcome.PASS, seconds=1.5),
        TestResult(
            "kselftests",
            "x86/private_mem_conversions_test",
            Outcome.TIMEOUT,
            reason="no result after 600 s",
        ),
        TestResult(
            "kselftests", "guest_memfd_conversions_test", Outcome.SKIP, reason="not in this tree"
        ),
        TestResult("gmem-ioctl", "t::crashy", Outcome.CRASH, excerpt="BUG: oops"),
        TestResult("gmem-ioctl", "t::gone", Outcome.MISSING),
    ]
    out = tmp_path / "junit.xml"
    junit.write(results, out, cell="mainline-lab-qemu")
    root = ET.parse(out).getroot()
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    ks = suites["mainline-lab-qemu.kselftests"]
    assert (ks.get("tests"), ks.get("errors"), ks.get("skipped")) == ("3", "1", "1")
    gi = suites["mainline-lab-qemu.gmem-ioctl"]
    assert (gi.get("failures"), gi.get("errors")) == ("1", "1")
    crash = gi.find("testcase[@name='t::crashy']/failure")
    assert crash is not None and crash.get("type") == "crash" and crash.text == "BUG: oops"
    # Round trip: our own file reads back with the same outcomes where JUnit can say it.
    back = junit.parse(out.read_text(), "x")
    assert [b.outcome for b in back] == [
        Outcome.PASS,
        Outcome.ERROR,
        Outcome.SKIP,
        Outcome.FAIL,
        Outcome.ERROR,
    ]
