"""Kind kselftest: per-case classification of selftest output; statuses and a lost VM."""

from __future__ import annotations

from pathlib import Path

from harness import suites
from harness.config import SuiteSpec
from harness.suites.kselftest import classify_selftest
from tests.unit.fakes import FakeRemote, Reply, fake_build
from tests.unit.suite_fakes import MAINLINE_SELFTESTS, context, ran, rows

GOLDEN = Path(__file__).parent / "golden" / "ktap"


def test_selftest_cases_from_ktap() -> None:
    out = (GOLDEN / "harness_mixed.log").read_text()
    got = classify_selftest("guest_memfd_conversions_test", ran(1), out, 600)
    assert [(n.split("::")[1], o) for n, o, _ in rows(got)] == [
        ("gmem_conversions.init_private", "pass"),
        ("gmem_conversions.init_shared", "fail"),
        ("gmem_conversions.elevated_refcount", "skip"),
        ("gmem_conversions.truncate", "pass"),
    ]
    assert "Expected 'B'" in got[1].excerpt


def test_selftest_without_tap() -> None:
    assert rows(classify_selftest("t", ran(0), "Random seed: 1\n", 60)) == [("t", "pass", "")]
    skip = classify_selftest(
        "t", ran(4), "1..0 # SKIP - Requirement not met: KVM_CAP_VM_TYPES\n", 60
    )
    assert rows(skip) == [("t", "skip", "Requirement not met: KVM_CAP_VM_TYPES")]
    failed = classify_selftest(
        "t", ran(1), "==== Test Assertion Failure ====\n  x.c:12: false\n", 60
    )
    assert rows(failed) == [("t", "fail", "exit status 1")]
    assert "x.c:12" in failed[0].excerpt
    assert rows(classify_selftest("t", ran(134), "", 60)) == [("t", "fail", "killed by signal 6")]
    # KVM selftests exit 254 on a failed TEST_ASSERT: an exit status, not a signal.
    assert rows(classify_selftest("t", ran(254), "", 60)) == [("t", "fail", "exit status 254")]
    assert rows(classify_selftest("t", ran(None, timed_out=True), "", 60)) == [
        ("t", "timeout", "no result within 60 s")
    ]


def test_selftest_truncated_by_an_abort_is_a_failure_not_a_crash() -> None:
    out = (GOLDEN / "harness_truncated.log").read_text()
    got = rows(classify_selftest("g", ran(1), out, 60))
    assert got[1] == (
        "g::gmem_conversions.init_shared",
        "fail",
        "the test exited (1) before reporting this case",
    )
    assert got[2][1] == "missing"


def test_selftest_truncated_by_timeout() -> None:
    out = (GOLDEN / "harness_truncated.log").read_text()
    got = rows(classify_selftest("g", ran(124, timed_out=True), out, 60))
    assert got[1][1] == "timeout" and got[-1][1] == "missing"


def test_selftest_nonzero_exit_with_passing_cases_adds_a_row() -> None:
    out = "TAP version 13\n1..1\nok 1 a\n"
    got = rows(classify_selftest("t", ran(1), out, 60))
    assert got == [("t::a", "pass", ""), ("t", "fail", "exit status 1")]


def test_kselftest_suite_statuses_and_lost_vm(tmp_path: Path) -> None:
    build = fake_build(tmp_path, {**MAINLINE_SELFTESTS, "pre_fault_memory_test": "failed"})
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
