"""Suite kinds: classification of selftest, driver and command output; payload; lost VMs."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import suites
from harness.config import SuiteSpec
from harness.remote import Ran
from harness.results import Outcome, Recorder, TestResult
from tests.unit.fakes import FakeRemote, Reply, fake_build

GOLDEN = Path(__file__).parent / "golden" / "ktap"


def ran(code: int | None, timed_out: bool = False) -> Ran:
    return Ran("./t", code, "", "", 1.0, timed_out=timed_out)


def rows(results: list[TestResult]) -> list[tuple[str, str, str]]:
    return [(r.name, r.outcome.value, r.reason) for r in results]


def test_selftest_cases_from_ktap() -> None:
    out = (GOLDEN / "harness_mixed.log").read_text()
    got = suites.classify_selftest("guest_memfd_conversions_test", ran(1), out, 600)
    assert [(n.split("::")[1], o) for n, o, _ in rows(got)] == [
        ("gmem_conversions.init_private", "pass"),
        ("gmem_conversions.init_shared", "fail"),
        ("gmem_conversions.elevated_refcount", "skip"),
        ("gmem_conversions.truncate", "pass"),
    ]
    assert "Expected 'B'" in got[1].excerpt


def test_selftest_without_tap() -> None:
    assert rows(suites.classify_selftest("t", ran(0), "Random seed: 1\n", 60)) == [
        ("t", "pass", "")
    ]
    skip = suites.classify_selftest(
        "t", ran(4), "1..0 # SKIP - Requirement not met: KVM_CAP_VM_TYPES\n", 60
    )
    assert rows(skip) == [("t", "skip", "Requirement not met: KVM_CAP_VM_TYPES")]
    failed = suites.classify_selftest(
        "t", ran(1), "==== Test Assertion Failure ====\n  x.c:12: false\n", 60
    )
    assert rows(failed) == [("t", "fail", "exit status 1")]
    assert "x.c:12" in failed[0].excerpt
    assert rows(suites.classify_selftest("t", ran(134), "", 60)) == [
        ("t", "fail", "killed by signal 6")
    ]
    # KVM selftests exit 254 on a failed TEST_ASSERT: an exit status, not a signal.
    assert rows(suites.classify_selftest("t", ran(254), "", 60)) == [
        ("t", "fail", "exit status 254")
    ]
    assert rows(suites.classify_selftest("t", ran(None, timed_out=True), "", 60)) == [
        ("t", "timeout", "no result within 60 s")
    ]


def test_selftest_truncated_by_an_abort_is_a_failure_not_a_crash() -> None:
    out = (GOLDEN / "harness_truncated.log").read_text()
    got = rows(suites.classify_selftest("g", ran(1), out, 60))
    assert got[1] == (
        "g::gmem_conversions.init_shared",
        "fail",
        "the test exited (1) before reporting this case",
    )
    assert got[2][1] == "missing"


def test_selftest_truncated_by_timeout() -> None:
    out = (GOLDEN / "harness_truncated.log").read_text()
    got = rows(suites.classify_selftest("g", ran(124, timed_out=True), out, 60))
    assert got[1][1] == "timeout" and got[-1][1] == "missing"


def test_selftest_nonzero_exit_with_passing_cases_adds_a_row() -> None:
    out = "TAP version 13\n1..1\nok 1 a\n"
    got = rows(suites.classify_selftest("t", ran(1), out, 60))
    assert got == [("t::a", "pass", ""), ("t", "fail", "exit status 1")]


DRIVER_OK = """\
$ timeout -k 10 1800 python3 ./private_mem_conversions_test.py
skipping anonymous_hugetlb backing source type
./private_mem_conversions_test -s anonymous -m 1 -n 1
Random seed: 0x6b8b4567
./private_mem_conversions_test -s anonymous -m 1 -n 4
./private_mem_conversions_test -s anonymous -m 4 -n 4

./private_mem_conversions_test -s shmem -m 1 -n 1
"""


def test_driver_subruns_each_get_a_result() -> None:
    got = rows(suites.classify_driver(ran(0), DRIVER_OK, 1800))
    assert got == [
        ("-s anonymous_hugetlb", "skip", "skipping anonymous_hugetlb backing source type"),
        ("-s anonymous -m 1 -n 1", "pass", ""),
        ("-s anonymous -m 1 -n 4", "pass", ""),
        ("-s anonymous -m 4 -n 4", "pass", ""),
        ("-s shmem -m 1 -n 1", "pass", ""),
    ]


def test_driver_stops_at_the_first_failure() -> None:
    out = (
        "./private_mem_conversions_test -s anonymous -m 1 -n 1\n"
        "./private_mem_conversions_test -s anonymous -m 1 -n 4\n"
        "==== Test Assertion Failure ====\n"
        "Test failed for source type 'anonymous'. Command: ...\n"
    )
    got = rows(suites.classify_driver(ran(1), out, 1800))
    assert got[0] == ("-s anonymous -m 1 -n 1", "pass", "")
    assert got[1][:2] == ("-s anonymous -m 1 -n 4", "fail")
    assert got[2] == (
        "-s anonymous -m 4 -n 4",
        "skip",
        "not run: the driver stopped after -s anonymous -m 1 -n 4",
    )


def test_driver_that_ran_nothing_is_missing() -> None:
    assert rows(suites.classify_driver(ran(0), "", 60))[0][:2] == ("driver", "missing")


def context(tmp_path: Path, remote: FakeRemote, build: object) -> suites.Context:
    rec = Recorder(tmp_path / "results", "cell", run_id="r")

    def on_lost() -> tuple[Outcome, str, str]:
        return Outcome.ERROR, "the VM went away", "console tail"

    return suites.Context(remote, rec, build, tmp_path, on_lost)  # type: ignore[arg-type]


def test_kselftest_suite_statuses_and_lost_vm(tmp_path: Path) -> None:
    build = fake_build(
        tmp_path,
        {
            "guest_memfd_test": "built",
            "guest_memfd_conversions_test": "absent",
            "x86/private_mem_conversions_test": "built",
            "pre_fault_memory_test": "failed",
        },
    )
    spec = SuiteSpec(
        kind="kselftest",
        tests=[
            "guest_memfd_test",
            "guest_memfd_conversions_test",
            "pre_fault_memory_test",
            "not_known_test",
            "x86/private_mem_conversions_test",
            "x86/after_the_crash",
        ],
        timeout_s=60,
    )

    def script(argv: list[str]) -> Reply:
        if argv == ["./private_mem_conversions_test"]:
            return Reply(lost=True)
        return Reply(0, "TAP version 13\n1..1\nok 1 file_size\n")

    remote = FakeRemote(script)
    ctx = context(tmp_path, remote, build)
    run = suites.run_suite("kselftests", spec, ctx)
    assert run.lost
    assert rows(run.results) == [
        ("guest_memfd_test::file_size", "pass", ""),
        ("guest_memfd_conversions_test", "skip", "not in this kernel tree"),
        ("pre_fault_memory_test", "fail", "the selftest failed to build (see the build log)"),
        ("not_known_test", "missing", "the build stage did not report this selftest"),
        ("x86/private_mem_conversions_test", "error", "the VM went away"),
        ("x86/after_the_crash", "missing", "not run: the VM was lost earlier in the suite"),
    ]
    # Each result is on disk already, in arrival order.
    lines = (ctx.recorder.root / "results.jsonl").read_text().splitlines()
    assert len(lines) == 6
    assert remote.calls[0] == ["./guest_memfd_test"]


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


def test_driver_suite_without_driver_skips(tmp_path: Path) -> None:
    build = fake_build(tmp_path, {"x86/private_mem_conversions_test": "built"})
    run = suites.run_suite(
        "conversions-driver",
        SuiteSpec(kind="conversions-driver"),
        context(tmp_path, FakeRemote(lambda a: Reply()), build),
    )
    assert rows(run.results)[0][:2] == ("driver", "skip")


def test_driver_suite_runs_the_tree_driver(tmp_path: Path) -> None:
    build = fake_build(
        tmp_path,
        {"x86/private_mem_conversions_test": "built"},
        driver="x86/private_mem_conversions_test.py",
    )
    remote = FakeRemote(lambda a: Reply(0, DRIVER_OK))
    run = suites.run_suite(
        "conversions-driver", SuiteSpec(kind="conversions-driver"), context(tmp_path, remote, build)
    )
    assert remote.calls == [["python3", "./private_mem_conversions_test.py"]]
    assert sum(r.outcome is Outcome.PASS for r in run.results) == 4


def test_payload_holds_only_what_the_suites_need(tmp_path: Path) -> None:
    build = fake_build(
        tmp_path,
        {
            "guest_memfd_test": "built",
            "x86/private_mem_conversions_test": "built",
            "guest_memfd_conversions_test": "absent",
        },
        driver="x86/private_mem_conversions_test.py",
    )
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
