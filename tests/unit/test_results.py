"""Outcome classification, exit codes and the on-disk record written as results arrive."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.results import Outcome, Recorder, TestResult, exit_code, load_summary, worst


def r(outcome: Outcome, name: str = "t") -> TestResult:
    return TestResult(suite="s", name=name, outcome=outcome)


@pytest.mark.parametrize(
    ("outcomes", "complete", "code"),
    [
        ([Outcome.PASS, Outcome.SKIP], True, 0),
        ([], True, 0),
        ([Outcome.PASS, Outcome.FAIL], True, 1),
        ([Outcome.CRASH], True, 1),
        ([Outcome.PASS, Outcome.TIMEOUT], True, 2),
        ([Outcome.MISSING], True, 2),
        ([Outcome.ERROR], True, 2),
        ([Outcome.PASS], False, 2),
        # A real failure is a finding even when the run broke afterwards.
        ([Outcome.FAIL, Outcome.ERROR], False, 1),
    ],
)
def test_exit_code(outcomes: list[Outcome], complete: bool, code: int) -> None:
    assert exit_code([r(o) for o in outcomes], complete) == code


def test_worst_orders_crash_first() -> None:
    assert worst([Outcome.PASS, Outcome.MISSING, Outcome.CRASH, Outcome.FAIL]) is Outcome.CRASH
    assert worst([]) is None


def test_recorder_writes_each_result_immediately(tmp_path: Path) -> None:
    rec = Recorder(tmp_path, "mainline-lab-qemu", run_id="run1")
    assert (tmp_path / "latest").resolve() == (tmp_path / "run1").resolve()
    summary = load_summary(rec.root)
    assert not summary.complete and summary.exit_code == 2

    rec.add(r(Outcome.PASS, "a"))
    rec.add(TestResult("s", "b", Outcome.SKIP, reason="no SW_PROTECTED"))
    lines = (rec.root / "results.jsonl").read_text().splitlines()
    assert [json.loads(x)["name"] for x in lines] == ["a", "b"]
    on_disk = load_summary(rec.root)
    assert on_disk.counts["pass"] == 1 and on_disk.counts["skip"] == 1
    assert on_disk.results[1].reason == "no SW_PROTECTED"
    # Still incomplete until finish(): a killed run leaves exactly this on disk.
    assert not on_disk.complete and on_disk.exit_code == 2

    final = rec.finish(complete=True)
    assert final.exit_code == 0 and load_summary(rec.root).verdict == "PASS"


def test_stage_timing_survives_an_exception(tmp_path: Path) -> None:
    rec = Recorder(tmp_path, "c", run_id="run2")
    with pytest.raises(RuntimeError), rec.stage("boot"):
        raise RuntimeError("qemu died\nmore")
    stage = load_summary(rec.root).stages["boot"]
    assert stage["status"] == "failed" and stage["error"] == "qemu died"


def test_harness_overhead_excludes_accounted_time(tmp_path: Path) -> None:
    rec = Recorder(tmp_path, "c", run_id="run3")
    rec.account("tests", 1e6)  # more than the wall time: overhead clamps at zero
    rec.save()
    assert load_summary(rec.root).harness_overhead_s == 0.0


def test_latest_moves_to_the_newest_run(tmp_path: Path) -> None:
    Recorder(tmp_path, "c", run_id="old")
    Recorder(tmp_path, "c", run_id="new")
    assert (tmp_path / "latest").resolve().name == "new"


def test_suite_outcome_prefers_pass_over_skip() -> None:
    from harness.results import suite_outcome

    assert suite_outcome([Outcome.PASS, Outcome.SKIP]) is Outcome.PASS
    assert suite_outcome([Outcome.SKIP]) is Outcome.SKIP
    assert suite_outcome([Outcome.PASS, Outcome.MISSING, Outcome.SKIP]) is Outcome.MISSING
    assert suite_outcome([]) is None
