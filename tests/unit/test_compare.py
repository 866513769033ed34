"""lab compare's logic: every group of the table, the flaky rules, the exit code."""

from __future__ import annotations

from harness.compare import (
    BAD,
    GOOD,
    REPORT_ORDER,
    Comparison,
    Group,
    Side,
    classify,
    compare,
    flakiness,
)
from harness.results import Outcome, TestResult
from tests.unit.outcomes import C, E, F, M, P, S, T


def results(**tests: Outcome | tuple[Outcome, str]) -> list[TestResult]:
    out = []
    for name, spec in tests.items():
        outcome, reason = spec if isinstance(spec, tuple) else (spec, "")
        out.append(TestResult("s", name, outcome, reason=reason))
    return out


def groups(c: Comparison) -> dict[str, str]:
    return {ch.test: ch.group.value for ch in c.changes}


def test_outcome_camps_cover_every_outcome() -> None:
    assert set(Outcome) == GOOD | BAD and not GOOD & BAD
    assert {F, C, E, T, M} == BAD


def test_every_cell_of_the_table() -> None:
    for good in (P, S):
        for bad in BAD:
            assert classify(Side(good), Side(bad)) is Group.REGRESSION
            assert classify(Side(bad), Side(good)) is (
                Group.FIX if good is P else Group.SKIP_CHANGE
            )
    assert classify(Side(F), Side(C)) is Group.PREEXISTING
    assert classify(Side(P), Side(P)) is Group.UNCHANGED
    assert classify(Side(S, "no x"), Side(S, "no x")) is Group.UNCHANGED
    assert classify(Side(S, "no x"), Side(S, "no y")) is Group.SKIP_CHANGE
    assert classify(Side(P), Side(S, "no x")) is Group.SKIP_CHANGE
    assert classify(Side(S, "no x"), Side(P)) is Group.SKIP_CHANGE
    assert classify(None, Side(F)) is Group.NEW
    assert classify(Side(P), None) is Group.GONE


def test_compare_groups_a_crafted_pair() -> None:
    a = results(
        broke=P,
        newly_runs_and_fails=(S, "no feature"),
        fixed=F,
        still=F,
        worse=T,
        dropped=P,
        reason=(S, "no x"),
        now_skipped=P,
        steady=P,
    )
    b = results(
        broke=(F, "EINVAL"),
        newly_runs_and_fails=C,
        fixed=P,
        still=F,
        worse=C,
        added=F,
        reason=(S, "no y"),
        now_skipped=(S, "no x"),
        steady=P,
    )
    c = compare(a, b)
    assert groups(c) == {
        "broke": "regression",
        "newly_runs_and_fails": "regression",
        "fixed": "fix",
        "still": "pre-existing",
        "worse": "pre-existing",
        "added": "new",
        "dropped": "gone",
        "reason": "skip change",
        "now_skipped": "skip change",
        "steady": "unchanged",
    }
    # Report order: regressions first; unchanged last and not counted as listed.
    seen = [ch.group for ch in c.changes]
    assert seen == sorted(seen, key=[*REPORT_ORDER, Group.UNCHANGED].index)
    assert c.changes[0].b == Side(F, "EINVAL")
    assert c.listed == 9 and c.exit_code == 1 and c.regressed


def test_no_regression_exits_0() -> None:
    c = compare(results(x=F, y=P), results(x=P, y=P, z=F))
    assert c.exit_code == 0 and c.count(Group.FIX) == 1 and c.count(Group.NEW) == 1


def test_duplicate_results_count_as_their_worst() -> None:
    a = results(x=P)
    b = [TestResult("s", "x", P), TestResult("s", "x", C, reason="oops")]
    (change,) = compare(a, b).changes
    assert change.group is Group.REGRESSION and change.b == Side(C, "oops")


def test_flakiness_record() -> None:
    mixed = flakiness([P, F, P, P, F, P])
    assert mixed.flaky and not mixed.consistent_failure
    assert (mixed.passes, mixed.runs) == (4, 6) and str(mixed) == "passed 4 of 6 runs (67%)"
    always = flakiness([F, C, F])
    assert always.consistent_failure and not always.flaky
    assert not flakiness([P, S, P]).flaky  # a probe that differs is not a flake


def test_mixed_outcomes_on_one_identity_are_flaky_not_a_regression() -> None:
    history = {("s", "x"): [P, F, P, P, F, P]}
    c = compare(results(x=P), results(x=F), history, history, same_identity=True)
    (change,) = c.changes
    assert change.group is Group.FLAKY and c.exit_code == 0
    assert change.flaky_b is not None and change.flaky_b.pass_rate == 4 / 6
    assert "flaky on B's identity (passed 4 of 6 runs (67%))" in change.note


def test_a_consistent_failure_is_never_hidden_by_flakiness_elsewhere() -> None:
    # Flaky on the base, failing in every run of the series: a regression.
    a_history = {("s", "x"): [P, F, P]}
    b_history = {("s", "x"): [F, F, F]}
    c = compare(results(x=P), results(x=F), a_history, b_history)
    (change,) = c.changes
    assert change.group is Group.REGRESSION and c.exit_code == 1
    assert change.flaky_b is not None and change.flaky_b.consistent_failure
    assert "failed in all 3 runs of B's identity" in change.note
    assert "flaky on A's identity" in change.note


def test_one_run_without_history_is_judged_on_its_outcome() -> None:
    c = compare(results(x=P), results(x=F), {}, {})
    assert c.changes[0].group is Group.REGRESSION and c.changes[0].note == ""


def test_flaky_fix_and_flaky_pre_existing() -> None:
    a_history = {("s", "fix"): [F, P, F], ("s", "both"): [F]}
    b_history = {("s", "fix"): [P], ("s", "both"): [F, P, F], ("s", "ok"): [P, F, P]}
    c = compare(results(fix=F, both=F, ok=P), results(fix=P, both=F, ok=P), a_history, b_history)
    assert groups(c) == {"fix": "flaky", "both": "flaky", "ok": "flaky"}
    assert c.exit_code == 0
