"""Two runs compared test by test, and the flaky rules. Pure: no files, no database.

Outcomes fall in two camps. GOOD: pass, skip (nothing went wrong). BAD: fail, crash,
error, timeout, missing (something went wrong, whoever's fault). Per (suite, test),
with A the reference (the base, last night) and B the run under judgement:

    A \\ B    pass            skip              BAD            absent
    pass     unchanged       skip change       REGRESSION     gone
    skip     skip change     unchanged or      REGRESSION     gone
                             skip change (reason differs)
    BAD      fix             skip change       pre-existing   gone
    absent   new             new               new            -

A skip -> BAD is a regression too: the test now runs (its feature probe succeeds) and
fails. BAD -> skip is not a fix: the failure is merely no longer exercised, so it is
listed with the skip changes, where both outcomes and reasons are shown. BAD -> BAD
(fail -> crash included) is "pre-existing": B's failure is not B's doing. A test absent
from one run (a suite not selected, a test renamed) is new or gone, never a regression:
an expected test without a result is recorded as `missing`, which is BAD.

Flaky rules. Runs of the same identity (same commit and diff, config hash, target:
harness.history.identity) ran the same kernel the same way, so a test that failed in
some of them and not in others is flaky, with its pass rate over those runs. Then:

- B failing (a regression or pre-existing) is listed as flaky, not as a regression,
  when the test is flaky on B's identity.
- A consistent failure (failed in every run of B's identity) is never flaky, even if
  the test is flaky on A's identity: flakiness elsewhere does not excuse it. A single
  run is consistent by this rule; such regressions carry a note when A's identity
  knows the test as flaky, since one run cannot tell the two apart.
- A fix (BAD -> pass) is flaky when the test is flaky on either identity: a flaky
  test passing once proves nothing.
- An unchanged test that is flaky on either identity is listed as flaky too, so the
  flaky list is complete; it does not change the exit code.

Only regressions make the exit code 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from harness.results import EXIT_OK, EXIT_TEST_FAILED, SEVERITY, Outcome, TestResult

GOOD = frozenset({Outcome.PASS, Outcome.SKIP})
BAD = frozenset(set(Outcome) - GOOD)

Key = tuple[str, str]
# Per (suite, test): its outcome in each run of one identity, oldest first
# (harness.history_query.outcomes_by_identity).
History = Mapping[Key, Sequence[Outcome]]


class Group(StrEnum):
    """How one test changed from A to B. Declared in the order a reviewer reads them:
    what B broke first, what it fixed, then what was already broken, then noise and
    bookkeeping, and last what did not change."""

    REGRESSION = "regression"
    FIX = "fix"
    PREEXISTING = "pre-existing"
    FLAKY = "flaky"
    NEW = "new"
    GONE = "gone"
    SKIP_CHANGE = "skip change"
    UNCHANGED = "unchanged"


# The groups a report lists, in Group's order: every change, not the unchanged tests.
REPORT_ORDER: tuple[Group, ...] = tuple(g for g in Group if g is not Group.UNCHANGED)


@dataclass(frozen=True)
class Side:
    """A test's result in one run."""

    outcome: Outcome
    reason: str = ""


@dataclass(frozen=True)
class Flakiness:
    """A test's record over the runs of one identity."""

    runs: int
    passes: int
    failures: int

    @property
    def flaky(self) -> bool:
        # Failed in some runs and not in others. pass vs skip without a failure is a
        # different probe result, not flakiness, and does not count.
        return 0 < self.failures < self.runs

    @property
    def consistent_failure(self) -> bool:
        return self.runs > 0 and self.failures == self.runs

    @property
    def pass_rate(self) -> float:
        return self.passes / self.runs if self.runs else 0.0

    def __str__(self) -> str:
        return f"passed {self.passes} of {self.runs} runs ({self.pass_rate:.0%})"


def flakiness(outcomes: Iterable[Outcome]) -> Flakiness:
    seen = list(outcomes)
    return Flakiness(
        runs=len(seen),
        passes=sum(o is Outcome.PASS for o in seen),
        failures=sum(o in BAD for o in seen),
    )


@dataclass(frozen=True)
class Change:
    """One test across the two runs: where it is listed and why."""

    suite: str
    test: str
    group: Group
    a: Side | None
    b: Side | None
    # Its record on A's and on B's identity (None when absent from that run).
    flaky_a: Flakiness | None = None
    flaky_b: Flakiness | None = None
    note: str = ""

    @property
    def key(self) -> Key:
        return (self.suite, self.test)


@dataclass(frozen=True)
class Comparison:
    changes: tuple[Change, ...]
    # Identical identities: every difference between A and B is flakiness by definition.
    same_identity: bool = False
    _by_group: dict[Group, list[Change]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        for change in self.changes:
            self._by_group.setdefault(change.group, []).append(change)

    def group(self, group: Group) -> list[Change]:
        return list(self._by_group.get(group, []))

    def count(self, group: Group) -> int:
        return len(self._by_group.get(group, []))

    @property
    def regressed(self) -> bool:
        return self.count(Group.REGRESSION) > 0

    @property
    def exit_code(self) -> int:
        return EXIT_TEST_FAILED if self.regressed else EXIT_OK

    @property
    def listed(self) -> int:
        """How many tests the comparison lists (everything but the unchanged)."""
        return len(self.changes) - self.count(Group.UNCHANGED)


_RANK = {o: i for i, o in enumerate(SEVERITY)}


def by_test(results: Iterable[TestResult]) -> dict[Key, Side]:
    """One result per (suite, test): the worst, when a run recorded a test twice."""
    sides: dict[Key, Side] = {}
    for r in results:
        key = (r.suite, r.name)
        old = sides.get(key)
        if old is None or _RANK[r.outcome] < _RANK[old.outcome]:
            sides[key] = Side(r.outcome, r.reason)
    return sides


def classify(a: Side | None, b: Side | None) -> Group:
    """The table in the module docstring, before the flaky rules."""
    if a is None:
        return Group.NEW
    if b is None:
        return Group.GONE
    if b.outcome in BAD:
        return Group.PREEXISTING if a.outcome in BAD else Group.REGRESSION
    if a.outcome in BAD:
        return Group.FIX if b.outcome is Outcome.PASS else Group.SKIP_CHANGE
    if a.outcome is b.outcome and (a.outcome is Outcome.PASS or a.reason == b.reason):
        return Group.UNCHANGED
    return Group.SKIP_CHANGE


def _record(history: History | None, key: Key, side: Side | None) -> Flakiness | None:
    """The test's record on a run's identity; without history, the run alone."""
    if side is None:
        return None
    seen = history.get(key) if history is not None else None
    return flakiness(seen if seen else [side.outcome])


def _apply_flaky_rules(
    group: Group, fa: Flakiness | None, fb: Flakiness | None
) -> tuple[Group, str]:
    a_flaky = fa is not None and fa.flaky
    b_flaky = fb is not None and fb.flaky
    if group in (Group.REGRESSION, Group.PREEXISTING) and b_flaky:
        return Group.FLAKY, f"failed in B, but flaky on B's identity ({fb})"
    if group is Group.REGRESSION and fb is not None:
        notes = []
        if fb.runs > 1:
            notes.append(f"failed in all {fb.runs} runs of B's identity")
        if a_flaky:
            notes.append(f"flaky on A's identity ({fa}); one failing run cannot tell")
        return group, "; ".join(notes)
    if group is Group.FIX and (a_flaky or b_flaky):
        where = fb if b_flaky else fa
        side = "B's" if b_flaky else "A's"
        return Group.FLAKY, f"passed in B, but flaky on {side} identity ({where})"
    if group is Group.UNCHANGED and (a_flaky or b_flaky):
        where = fb if b_flaky else fa
        side = "B's" if b_flaky else "A's"
        return Group.FLAKY, f"same outcome in A and B; flaky on {side} identity ({where})"
    return group, ""


def compare(
    a: Iterable[TestResult],
    b: Iterable[TestResult],
    a_history: History | None = None,
    b_history: History | None = None,
    *,
    same_identity: bool = False,
) -> Comparison:
    """Compare run A (the reference) with run B, test by test.

    a_history and b_history are the tests' outcomes over the runs of A's and of B's
    identity (including A and B themselves when they are recorded); a test missing
    from them is judged on its one outcome. Changes come in REPORT_ORDER, then
    unchanged, each group by suite and test.
    """
    sides_a, sides_b = by_test(a), by_test(b)
    changes: list[Change] = []
    for key in sorted(sides_a.keys() | sides_b.keys()):
        sa, sb = sides_a.get(key), sides_b.get(key)
        fa, fb = _record(a_history, key, sa), _record(b_history, key, sb)
        group, note = _apply_flaky_rules(classify(sa, sb), fa, fb)
        changes.append(Change(key[0], key[1], group, sa, sb, fa, fb, note))
    order = {g: i for i, g in enumerate(Group)}
    changes.sort(key=lambda c: (order[c.group], c.suite, c.test))
    return Comparison(tuple(changes), same_identity=same_identity)
