"""The run when something stops it early (issue 15), with stand-ins for build, image,
VM and SSH: every chosen suite ends with an outcome (the ones that never ran as
`missing` with the reason), the results collected so far are kept, and the process's
exit code is the one summary.json records, on every path."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import pytest

from harness import build, results
from harness.config import SuiteSpec
from harness.errors import InfraError, UserError
from harness.qemu import boot as qemu_boot
from harness.results import load_summary
from tests.unit.fakes import Reply
from tests.unit.test_runner import BEFORE, Harness, dmesg_then, lab_with

KS = SuiteSpec(kind="kselftest", tests=["guest_memfd_test", "x86/a_test", "x86/b_test"])
SUITES = {
    "first": SuiteSpec(kind="command", argv=["true"]),
    "ks": KS,
    "last": SuiteSpec(kind="command", argv=["true"]),
}
ORDER = ("first", "ks", "last")


def built(h: Harness) -> None:
    for name in ("x86/a_test", "x86/b_test"):
        h.build.selftests[name] = "built"


def outcomes(run_dir: Path) -> dict[str, str]:
    return {k: v["outcome"] for k, v in load_summary(run_dir).suites.items()}


def rows(run_dir: Path) -> list[tuple[str, str, str]]:
    return [(r.suite, r.name, r.outcome.value) for r in load_summary(run_dir).results]


def agrees(code: int, run_dir: Path) -> None:
    """The process's exit code is summary.json's."""
    assert json.loads((run_dir / "summary.json").read_text())["exit_code"] == code


def test_interrupt_mid_suite_keeps_what_was_collected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def script(argv: list[str]) -> Reply:
        if argv == ["./a_test"]:
            return Reply(0, "started\n", interrupt="SIGTERM")
        return Reply(0, "ok\n")

    h = Harness(tmp_path, monkeypatch, dmesg_then(script, [BEFORE]))
    built(h)
    code, run_dir, out = h.run(lab_with(tmp_path, SUITES), ORDER)
    assert code == 2
    agrees(code, run_dir)
    s = load_summary(run_dir)
    assert not s.complete and "interrupted by SIGTERM" in s.incomplete_reason
    assert rows(run_dir) == [
        ("first", "true", "pass"),
        ("ks", "guest_memfd_test", "pass"),
        ("ks", "x86/a_test", "missing"),
        ("ks", "x86/b_test", "missing"),
        ("last", "(suite)", "missing"),
    ]
    by_name = {r.name: r for r in s.results}
    assert "interrupted by SIGTERM" in by_name["x86/a_test"].reason
    assert "started" in by_name["x86/a_test"].excerpt  # its output so far
    assert by_name["x86/b_test"].reason == "not run: interrupted by SIGTERM"
    assert "not run: interrupted by SIGTERM" in by_name["(suite)"].reason
    assert outcomes(run_dir) == {"first": "pass", "ks": "missing", "last": "missing"}
    assert s.suites["ks"]["counts"]["pass"] == 1
    assert s.stages["suite:ks"]["status"] == "interrupted"
    assert "missing  last / (suite): not run: interrupted" in out
    assert all(m.dead for m in h.machines)
    assert (run_dir / "report.html").is_file()


PYTEST_PROGRESS = """\
guest/test_gmem.py::test_create PASSED                                   [ 10%]
guest/test_gmem.py::TestConvert::test_share[4k] FAILED                   [ 20%]
guest/test_gmem.py::test_probe SKIPPED (no KVM_CAP_X)                    [ 30%]
guest/test_gmem.py::test_slow """


def test_interrupted_pytest_suite_keeps_its_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def script(argv: list[str]) -> Reply:
        if "pytest" in argv:
            return Reply(out=PYTEST_PROGRESS, interrupt="SIGINT")
        return Reply(0)

    h = Harness(tmp_path, monkeypatch, dmesg_then(script, [BEFORE]))
    suites = {"g": SuiteSpec(kind="pytest", path="tests/guest")}
    code, run_dir, _ = h.run(lab_with(tmp_path, suites), ("g",))
    assert code == 1  # a test failed before the interrupt: a finding, exit 1
    agrees(code, run_dir)
    assert rows(run_dir) == [
        ("g", "guest.test_gmem::test_create", "pass"),
        ("g", "guest.test_gmem.TestConvert::test_share[4k]", "fail"),
        ("g", "guest.test_gmem::test_probe", "skip"),
        ("g", "tests/guest", "missing"),
    ]
    assert "3 results read from its output" in load_summary(run_dir).results[-1].reason


def test_boot_failure_lists_every_suite_as_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(tmp_path, monkeypatch, dmesg_then(lambda a: Reply(0), [BEFORE]))

    def failed_boot(*args: Any, **kwargs: Any) -> None:
        raise InfraError("boot failed: the kernel crashed while booting\nKernel panic", "see")

    monkeypatch.setattr(qemu_boot, "boot", failed_boot)
    code, run_dir, _ = h.run(lab_with(tmp_path, SUITES), ORDER)
    assert code == 2
    agrees(code, run_dir)
    assert outcomes(run_dir) == dict.fromkeys(ORDER, "missing")
    reasons = {r.reason for r in load_summary(run_dir).results}
    assert reasons == {"not run: boot failed: the kernel crashed while booting"}


def test_user_error_mid_run_exits_3_in_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(tmp_path, monkeypatch, dmesg_then(lambda a: Reply(0), [BEFORE]))

    def bad_config(lab: Any, k: str, c: str) -> None:
        raise UserError("unknown config 'nosuch'", "pass --config with a name from lab.yaml")

    monkeypatch.setattr(build, "prepare_request", bad_config)
    code, run_dir, out = h.run(lab_with(tmp_path, SUITES), ORDER)
    assert code == 3
    agrees(code, run_dir)
    s = load_summary(run_dir)
    assert s.verdict.startswith("USER ERROR")
    assert outcomes(run_dir) == dict.fromkeys(ORDER, "missing")
    assert "USER ERROR" in (run_dir / "report.md").read_text()
    assert "verdict: USER ERROR (incomplete run) (exit 3)" in out


def test_full_disk_mid_run_ends_with_a_reason_and_an_agreeing_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills while suite ks records its results: the run ends (exit 2, never a
    traceback or 1), the summary still gets written (the reserve) and lists every suite."""
    h = Harness(tmp_path, monkeypatch, dmesg_then(lambda a: Reply(0, "ok\n"), [BEFORE]))
    built(h)
    real_append = results.Recorder._append
    calls = {"n": 0}

    def append(self: results.Recorder, result: results.TestResult) -> None:
        calls["n"] += 1
        if calls["n"] >= 3:  # first/true, ks/guest_memfd_test, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device", str(self.root))
        real_append(self, result)

    monkeypatch.setattr(results.Recorder, "_append", append)
    code, run_dir, out = h.run(lab_with(tmp_path, SUITES), ORDER)
    assert code == 2
    agrees(code, run_dir)
    s = load_summary(run_dir)
    assert s.incomplete_reason.startswith("disk full: No space left on device")
    assert outcomes(run_dir) == {"first": "pass", "ks": "pass", "last": "missing"}
    assert s.suites["ks"]["note"].startswith("cut short: disk full")
    # results.jsonl is rewritten whole at the end, like summary.json.
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    assert len(lines) == len(s.results) == 4
    assert not (run_dir / results.RESERVE).exists()
    assert "Traceback" not in out


def test_paused_vm_is_said_and_not_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paused = "QEMU stopped the guest: status io-error: a disk write failed"

    def script(argv: list[str]) -> Reply:
        if argv == ["sleep", "600"]:
            h.machines[0].state = paused  # what the QMP watch saw
            return Reply(lost=True)
        return Reply(0)

    h = Harness(tmp_path, monkeypatch, dmesg_then(script, [BEFORE]))
    suites = {
        "hang": SuiteSpec(kind="command", argv=["sleep", "600"]),
        "last": SuiteSpec(kind="command", argv=["true"]),
    }
    code, run_dir, out = h.run(lab_with(tmp_path, suites), ("hang", "last"))
    assert code == 2
    agrees(code, run_dir)
    s = load_summary(run_dir)
    assert "status io-error" in s.incomplete_reason
    assert rows(run_dir) == [("hang", "sleep 600", "error"), ("last", "(suite)", "missing")]
    assert "not run: the VM was lost in suite hang" in s.results[-1].reason
    assert "[suite:hang] error in" in out


def test_terminal_says_a_suites_verdict_not_ok(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def script(argv: list[str]) -> Reply:
        return Reply(timed_out=True) if argv[0] == "sleep" else Reply(0)

    h = Harness(tmp_path, monkeypatch, dmesg_then(script, [BEFORE]))
    suites = {"hang": SuiteSpec(kind="command", argv=["sleep", "60"], timeout_s=1)}
    code, run_dir, out = h.run(lab_with(tmp_path, suites), ("hang",))
    assert code == 2
    agrees(code, run_dir)
    assert "[suite:hang] timeout in" in out and "[suite:hang] ok" not in out
    assert "timeout  hang / sleep 60" in out
