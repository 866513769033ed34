"""Kill classification: which results kill a mutant, which say nothing, and the scores."""

from __future__ import annotations

import pytest

from harness.mutate.classify import (
    ANY,
    BOOT,
    Verdict,
    baseline_of,
    classify_boot,
    classify_suite,
    score_table,
)
from harness.results import Outcome, TestResult
from tests.unit.outcomes import C, E, F, M, P, S, T


def results(*pairs: tuple[str, Outcome]) -> list[TestResult]:
    return [TestResult("s", name, outcome, reason=f"why {name}") for name, outcome in pairs]


@pytest.mark.parametrize(
    ("got", "baseline", "verdict"),
    [
        # Any failing, crashing or timed-out test kills.
        ([("a", P), ("b", F)], None, Verdict.KILLED),
        ([("a", C)], None, Verdict.KILLED),
        ([("a", T), ("b", P)], None, Verdict.KILLED),
        # The dmesg bracket's result (a WARN during the suite) kills like a test.
        ([("a", P), ("dmesg", F)], {"a": P}, Verdict.KILLED),
        ([("a", P), ("dmesg", C)], {"a": P}, Verdict.KILLED),
        # Everything passed or skipped: survived.
        ([("a", P), ("b", S)], None, Verdict.SURVIVED),
        # Infrastructure: error, missing, no results at all (retried, then unknown).
        ([("a", P), ("b", E)], None, Verdict.INFRA),
        ([("a", M)], None, Verdict.INFRA),
        ([], None, Verdict.INFRA),
        # A real failure outranks infrastructure trouble in the same suite.
        ([("a", E), ("b", F)], None, Verdict.KILLED),
        # A test the pristine kernel already fails (or errors on) is ignored ...
        ([("a", F), ("b", P)], {"a": F, "b": P}, Verdict.SURVIVED),
        ([("a", E), ("b", P)], {"a": E, "b": P}, Verdict.SURVIVED),
        ([("a", P), ("dmesg", F)], {"a": P, "dmesg": F}, Verdict.SURVIVED),
        # ... a test passing there and failing here is not.
        ([("a", F), ("b", P)], {"a": P, "b": P}, Verdict.KILLED),
        # A test the baseline never ran (a new KTAP case) counts.
        ([("new", F)], {"a": P}, Verdict.KILLED),
        # Nothing left to judge by: unknown at once (a retry cannot help).
        ([("a", F)], {"a": F}, Verdict.UNKNOWN),
    ],
)
def test_classification_table(
    got: list[tuple[str, Outcome]], baseline: dict[str, Outcome] | None, verdict: Verdict
) -> None:
    assert classify_suite(results(*got), baseline).verdict is verdict


def test_the_deciding_line_names_the_worst_test() -> None:
    found = classify_suite(results(("a", F), ("b", C), ("c", T)))
    assert found.why == "b crash: why b (+2 more)"


def test_a_survivor_that_newly_skips_says_so() -> None:
    found = classify_suite(results(("a", S), ("b", P)), {"a": P, "b": P})
    assert found.verdict is Verdict.SURVIVED
    assert "skip now: a" in found.why


def test_boot_results_appear_only_for_a_warn_or_crash_while_booting() -> None:
    assert classify_boot([]).verdict is Verdict.SURVIVED
    boot = [TestResult("boot", "dmesg", C, "BUG: kernel NULL pointer dereference")]
    assert classify_boot(boot).verdict is Verdict.KILLED
    # The same WARN on the pristine kernel's boot kills nothing.
    warn = [TestResult("boot", "dmesg", F, "WARNING: at mm/x.c")]
    assert classify_boot(warn, {"dmesg": F}).verdict is Verdict.SURVIVED


def test_baseline_keeps_the_worst_outcome_of_a_repeated_name() -> None:
    assert baseline_of(results(("a", P), ("a", F), ("b", S))) == {"a": F, "b": S}


def test_scores_side_by_side_and_any_suite() -> None:
    K, V, U = Verdict.KILLED, Verdict.SURVIVED, Verdict.UNKNOWN
    rows = [
        {"py": K, "ks": V},
        {"py": K, "ks": K},
        {"py": V, "ks": V},
        {"py": U, "ks": V},
        {"py": V, "ks": U},
    ]
    table = score_table(rows, ["py", "ks"])
    assert (table["py"].killed, table["py"].survived, table["py"].unknown) == (2, 2, 1)
    assert table["py"].score == 0.5 and table["py"].percent == "50%"
    assert (table["ks"].killed, table["ks"].survived, table["ks"].unknown) == (1, 3, 1)
    assert (table[ANY].killed, table[ANY].survived, table[ANY].unknown) == (2, 1, 2)
    assert score_table([], ["py"])["py"].score is None
    assert score_table([], ["py"])["py"].percent == "n/a"
    # Killed while booting: no suite's credit, but the lab caught it.
    booted = score_table([{"py": V, "ks": V, BOOT: K}], ["py", "ks"])
    assert booted["py"].survived == 1 and booted[ANY].killed == 1
