"""Kinds pytest and command through run_suite; the payload pushed to the guest."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import suites
from harness.config import SuiteSpec
from tests.unit.fakes import FakeRemote, Reply, fake_build
from tests.unit.suite_fakes import MAINLINE_SELFTESTS, context, rows


def test_pytest_suite_reads_junit(tmp_path: Path) -> None:
    xml = (
        '<testsuites><testsuite><properties><property name="kvm" value="True"/></properties>'
        '<testcase classname="test_a" name="test_x" time="1"/>'
        '<testcase classname="test_a" name="test_y"><failure message="boom">tb</failure>'
        "</testcase></testsuite></testsuites>"
    )
    remote = FakeRemote(lambda argv: Reply(1, "collected 2 items\n"))
    remote.files[f"{suites.OUTPUT}/gmem-ioctl/junit.xml"] = xml
    ctx = context(tmp_path, remote, None)
    run = suites.run_suite("gmem-ioctl", SuiteSpec(kind="pytest", path="tests/guest"), ctx)
    assert rows(run.results) == [("test_a::test_x", "pass", ""), ("test_a::test_y", "fail", "boom")]
    assert ctx.recorder.record.environment["guest probe: kvm"] == "True"
    assert "--junitxml=/var/tmp/gmemlab/out/gmem-ioctl/junit.xml" in remote.calls[0]


def test_pytest_suite_without_junit_is_missing(tmp_path: Path) -> None:
    remote = FakeRemote(lambda argv: Reply(2, "ImportError\n"))
    run = suites.run_suite("g", SuiteSpec(kind="pytest"), context(tmp_path, remote, None))
    assert rows(run.results)[0][:2] == ("tests/guest", "missing")


@pytest.mark.parametrize(
    ("reply", "outcome"),
    [
        (Reply(0), "pass"),
        (Reply(1, "boom"), "fail"),
        (Reply(4, "SKIP nothing to do"), "skip"),
        (Reply(timed_out=True), "timeout"),
        (Reply(lost=True), "error"),
    ],
)
def test_command_suite(tmp_path: Path, reply: Reply, outcome: str) -> None:
    spec = SuiteSpec(kind="command", argv=["sh", "-c", "exit 1; rm -rf /"], timeout_s=5)
    remote = FakeRemote(lambda argv: reply)
    run = suites.run_suite("inject", spec, context(tmp_path, remote, None))
    assert run.results[0].outcome.value == outcome
    assert run.results[0].name == "sh -c 'exit 1; rm -rf /'"
    assert remote.calls == [["sh", "-c", "exit 1; rm -rf /"]]


def test_payload_holds_only_what_the_suites_need(tmp_path: Path) -> None:
    build = fake_build(tmp_path, MAINLINE_SELFTESTS, driver="x86/private_mem_conversions_test.py")
    chosen = {
        "gmem-ioctl": SuiteSpec(kind="pytest", path="tests/guest"),
        "kselftests": SuiteSpec(
            kind="kselftest", tests=["guest_memfd_test", "guest_memfd_conversions_test"]
        ),
        "conversions-driver": SuiteSpec(kind="conversions-driver"),
    }
    items = suites.payload(chosen, build, tmp_path)
    assert [name for _, name in items] == [
        "selftests/guest_memfd_test",
        "selftests/x86/private_mem_conversions_test",
        "selftests/x86/private_mem_conversions_test.py",
        "tests/guest",
    ]
