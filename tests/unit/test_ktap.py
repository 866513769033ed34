"""KTAP/TAP parser against golden logs: each *.log has a *.expected.json beside it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import ktap
from harness.results import Outcome

GOLDEN = Path(__file__).parent / "golden" / "ktap"
LOGS = sorted(GOLDEN.glob("*.log"))


@pytest.mark.parametrize("log", LOGS, ids=[p.stem for p in LOGS])
def test_golden(log: Path) -> None:
    expected = json.loads(log.with_suffix(".expected.json").read_text())
    doc = ktap.parse(log.read_text())
    got = [[path, case.outcome.value, case.reason] for path, case in doc.leaves()]
    assert got == expected["cases"]
    assert doc.truncated == expected["truncated"]
    assert doc.missing_plan == expected["missing_plan"]
    assert doc.plan == expected["plan"]
    assert doc.found == expected.get("found", True)


def test_there_are_goldens() -> None:
    assert len(LOGS) >= 8


def test_failure_keeps_its_diagnostic_lines() -> None:
    doc = ktap.parse((GOLDEN / "harness_mixed.log").read_text())
    failed = doc.cases[1]
    assert failed.outcome is Outcome.FAIL
    assert any("Expected 'B'" in line for line in failed.lines)


def test_nested_result_without_name_takes_the_subtest_name() -> None:
    text = "KTAP version 1\n1..1\n    # Subtest: inner\n    1..1\n    ok 1 a\nok 1\n"
    doc = ktap.parse(text)
    assert doc.cases[0].name == "inner"
    assert [p for p, _ in doc.leaves()] == ["inner::a"]


def test_parent_failure_with_passing_children_is_reported() -> None:
    text = "KTAP version 1\n1..1\n    1..1\n    ok 1 a\nnot ok 1 outer\n"
    leaves = ktap.parse(text).leaves()
    assert [(p, c.outcome) for p, c in leaves] == [
        ("outer::a", Outcome.PASS),
        ("outer", Outcome.FAIL),
    ]


def test_todo_that_passes_is_a_pass() -> None:
    doc = ktap.parse("TAP version 13\n1..1\nok 1 flaky # TODO investigate\n")
    assert doc.cases[0].outcome is Outcome.PASS
    assert doc.cases[0].directive == "TODO"
