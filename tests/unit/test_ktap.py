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


# --- tab indentation and streams cut short (issue 15) --------------------------------


def test_tab_indented_subtests_nest_like_space_indented_ones() -> None:
    spaces = "KTAP version 1\n1..2\n    # Subtest: s\n    1..2\n    ok 1 a\n    not ok 2 b\n"
    spaces += "not ok 1 s\nok 2 t\n"
    tabs = spaces.replace("    ", "\t")
    got = [(p, c.outcome) for p, c in ktap.parse(tabs).leaves()]
    assert got == [(p, c.outcome) for p, c in ktap.parse(spaces).leaves()]
    assert got == [("s::a", Outcome.PASS), ("s::b", Outcome.FAIL), ("t", Outcome.PASS)]
    doc = ktap.parse(tabs)
    assert doc.plan == 2 and not doc.truncated


def test_tab_indented_plan_does_not_replace_the_parents() -> None:
    # Before tabs counted as indentation, the nested "1..2" overwrote the top plan.
    doc = ktap.parse("TAP version 13\n1..3\n\t1..2\n\tok 1 a\n\tok 2 b\nok 1 outer\n")
    assert doc.plan == 3
    assert [(p, c.outcome) for p, c in doc.leaves()] == [
        ("outer::a", Outcome.PASS),
        ("outer::b", Outcome.PASS),
        ("test 2", Outcome.CRASH),  # the plan was not met: the next case was running
        ("test 3", Outcome.MISSING),
    ]


@pytest.mark.parametrize("indent", ["    ", "\t"])
def test_stream_that_stops_mid_test_is_a_crash_not_a_pass(indent: str) -> None:
    text = (
        "TAP version 13\n1..2\n"
        f"{indent}1..2\n{indent}ok 1 first\n{indent}#  RUN           fx.second ...\n"
    )
    doc = ktap.parse(text)
    assert doc.truncated
    outcomes = {p: c.outcome for p, c in doc.leaves()}
    assert outcomes["test 1::fx.second"] is Outcome.CRASH
    assert outcomes["test 1::first"] is Outcome.PASS
    assert outcomes["test 2"] is Outcome.MISSING
    assert doc.cases[0].outcome is Outcome.CRASH  # the parent, cut short, did not pass


def test_stream_that_stops_after_a_run_line_without_plan_is_a_crash() -> None:
    doc = ktap.parse("TAP version 13\nok 1 a\n#  RUN           fx.b ...\n# partial output\n")
    assert [(p, c.outcome) for p, c in doc.leaves()] == [
        ("a", Outcome.PASS),
        ("fx.b", Outcome.CRASH),
    ]
    assert doc.truncated and doc.missing_plan


# --- a child's stream printed at its parent's indentation (kselftest_harness forks) ---


def test_a_childs_skip_plan_does_not_replace_the_parents() -> None:
    doc = ktap.parse((GOLDEN / "harness_child_skip.log").read_text())
    assert doc.plan == 9 and doc.plan_skip is None
    counts = [c.outcome for _, c in doc.leaves()]
    assert counts.count(Outcome.PASS) == 8 and counts.count(Outcome.SKIP) == 1


def test_a_childs_skip_plan_counts_in_the_selftest_rows() -> None:
    from harness.suites.kselftest import classify_selftest
    from tests.unit.suite_fakes import ran

    out = (GOLDEN / "harness_child_skip.log").read_text()
    rows = classify_selftest("guest_memfd_conversions_test", ran(0), out, 600)
    assert [r.outcome for r in rows].count(Outcome.PASS) == 8
    skipped = [r for r in rows if r.outcome is Outcome.SKIP]
    assert [r.name for r in skipped] == [
        "guest_memfd_conversions_test::gmem_conversions.elevated_refcount"
    ]


def test_a_child_that_inherited_the_plan_repeats_the_number() -> None:
    # ksft_exit_skip() in a forked case that knows the plan prints "ok N # SKIP why";
    # the harness then prints its own "ok N name # SKIP unknown" for the same case.
    text = (
        "TAP version 13\n1..2\n#  RUN           f.a ...\nok 1 # SKIP - no vmsplice\n"
        "# Planned tests != run tests (2 != 1)\n#            OK  f.a\n"
        "ok 1 f.a # SKIP unknown\n#  RUN           f.b ...\n#            OK  f.b\nok 2 f.b\n"
    )
    doc = ktap.parse(text)
    assert [(p, c.outcome, c.reason) for p, c in doc.leaves()] == [
        ("f.a", Outcome.SKIP, "- no vmsplice"),
        ("f.b", Outcome.PASS, ""),
    ]
    assert not doc.truncated


def test_a_childs_whole_stream_becomes_the_cases_subtests() -> None:
    text = (
        "TAP version 13\n1..2\nok 1 first\nTAP version 13\n1..2\nok 1 inner_a\n"
        "not ok 2 inner_b\nnot ok 2 second\n"
    )
    doc = ktap.parse(text)
    assert doc.plan == 2 and not doc.truncated
    assert [(p, c.outcome) for p, c in doc.leaves()] == [
        ("first", Outcome.PASS),
        ("second::inner_a", Outcome.PASS),
        ("second::inner_b", Outcome.FAIL),
    ]


def test_a_childs_stream_cut_short_is_not_a_pass() -> None:
    text = "TAP version 13\n1..1\nTAP version 13\n1..3\nok 1 inner_a\nok 1 outer\n"
    doc = ktap.parse(text)
    got = [(p, c.outcome) for p, c in doc.leaves()]
    assert got[0] == ("outer::inner_a", Outcome.PASS)
    assert ("outer::test 2", Outcome.CRASH) in got
    assert ("outer::test 3", Outcome.MISSING) in got
    assert doc.cases[0].outcome is Outcome.CRASH


def test_a_childs_skip_plan_in_a_stream_without_a_plan_is_not_the_plan() -> None:
    text = "TAP version 13\nok 1 a\n1..0 # SKIP - child\nok 2 b # SKIP unknown\n1..2\n"
    doc = ktap.parse(text)
    assert doc.plan == 2 and doc.plan_skip is None
    assert [(p, c.outcome, c.reason) for p, c in doc.leaves()] == [
        ("a", Outcome.PASS, ""),
        ("b", Outcome.SKIP, "- child"),
    ]


@pytest.mark.parametrize("tail", ["1..2\n", "TAP version 13\n", "1..0 # SKIP - late child\n"])
def test_a_stream_whose_plan_is_met_is_not_cut_short_by_a_late_header(tail: str) -> None:
    doc = ktap.parse("TAP version 13\n1..2\nok 1 a\nok 2 b\n" + tail)
    assert doc.plan == 2 and not doc.truncated
    assert [(p, c.outcome) for p, c in doc.leaves()] == [("a", Outcome.PASS), ("b", Outcome.PASS)]
