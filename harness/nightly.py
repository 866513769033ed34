"""The nightly view of a matrix: each cell's last nights from the history.

Per cell: the last N runs as a strip (history_report.cell_strip) and the share of its
tests that passed in each (a sparkline: the pass rate over time); tonight's newest run
compared with the cell's newest run before tonight (night over night: regressions are
flagged, the flaky rules of harness.compare apply); and the tests that are flaky on
tonight's identity (same commit, config, target), each with its pass rate over those
runs. A flaky test is reported as flaky, not as a regression; a test that failed in
every run of tonight's identity is never flaky, so a consistent failure is never hidden.

Reads the history only (harness.history); matrix.py renders what this returns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness import compare, history, history_query
from harness.compare import BAD, Comparison, Flakiness, Group
from harness.history import Database
from harness.history_query import RunRow
from harness.history_report import CellStrip, cell_strip, rate_sparkline_svg, run_outcome
from harness.results import Outcome

DEFAULT_NIGHTS = 14
# A run in Markdown's strip: passed, a test failed, anything else (infrastructure).
MARKS = {"pass": "P", "fail": "F", "error": "E"}


@dataclass(frozen=True)
class FlakyTest:
    suite: str
    test: str
    record: Flakiness
    # Whose runs the rate is over: "" tonight's identity, else which one.
    where: str = ""

    @property
    def rate(self) -> str:
        return f"{self.record}{f' of {self.where}' if self.where else ''}"


@dataclass(frozen=True)
class CellNight:
    cell: str
    strip: CellStrip
    # Per drawn run: the share of its tests (skips aside) that passed; None: no tests.
    test_rates: tuple[float | None, ...]
    rate_svg: str
    latest: RunRow | None
    previous: RunRow | None
    comparison: Comparison | None
    flaky: tuple[FlakyTest, ...] = ()
    # Tests failing in every run of tonight's identity (more than one run): consistent.
    consistent: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    # The latest run's failures (suite, test, outcome, its flaky record or None): a
    # flaky one is marked so, every other one is a failure whatever its history.
    failing: tuple[tuple[str, str, str, FlakyTest | None], ...] = ()
    # The strip as text for Markdown, one mark per run (oldest first).
    marks: str = ""

    @property
    def regressions(self) -> list[compare.Change]:
        return self.comparison.group(Group.REGRESSION) if self.comparison else []

    @property
    def rates_text(self) -> str:
        return " ".join("-" if r is None else f"{r:.0%}" for r in self.test_rates)


def test_pass_rate(run: RunRow) -> float | None:
    """Passed / (passed + failed, crashed, errored, timed out, missing); skips aside."""
    passed = run.counts.get(Outcome.PASS.value, 0)
    bad = sum(run.counts.get(o.value, 0) for o in BAD)
    return passed / (passed + bad) if passed + bad else None


def flaky_tests(
    db: Database, run: RunRow
) -> tuple[tuple[FlakyTest, ...], tuple[tuple[str, str], ...]]:
    """The flaky tests on run's identity, and the tests consistently failing over more
    than one run of it."""
    flaky, consistent = [], []
    for (suite, test), outcomes in sorted(
        history_query.outcomes_by_identity(db, run.identity).items()
    ):
        record = compare.flakiness(outcomes)
        if record.flaky:
            flaky.append(FlakyTest(suite, test, record))
        elif record.consistent_failure and record.runs > 1:
            consistent.append((suite, test))
    return tuple(flaky), tuple(consistent)


def cell_night(db: Database, cell: str, tonight: Sequence[RunRow], nights: int) -> CellNight:
    """The cell's view: tonight's runs (oldest first) against the history before them."""
    drawn = history_query.runs_for_cell(db, cell, last=nights)
    rates = tuple(test_pass_rate(r) for r in drawn)
    latest = tonight[-1] if tonight else (drawn[-1] if drawn else None)
    previous = None
    if latest is not None:
        mine = {r.pk for r in tonight} | {latest.pk}
        first = min((r.started for r in tonight), default=latest.started)
        before = [
            r
            for r in history_query.runs_for_cell(db, cell)
            if r.pk not in mine and r.started <= first
        ]
        previous = before[-1] if before else None
    comparison = None
    if latest is not None and previous is not None:
        comparison = history_query.compare_runs(db, previous, latest)
    flaky, consistent = flaky_tests(db, latest) if latest is not None else ((), ())
    by_key = {(f.suite, f.test): f for f in flaky}
    # Flaky on the previous night's identity only (tonight is a new commit): still said.
    for ch in comparison.group(Group.FLAKY) if comparison is not None else []:
        if ch.key not in by_key and ch.flaky_a is not None and ch.flaky_a.flaky:
            by_key[ch.key] = FlakyTest(ch.suite, ch.test, ch.flaky_a, "the previous commit")
    flaky = tuple(sorted(by_key.values(), key=lambda f: (f.suite, f.test)))
    failing = []
    if latest is not None:
        for key, side in compare.by_test(history_query.results_of(db, latest)).items():
            if side.outcome in BAD:
                failing.append((key[0], key[1], side.outcome.value, by_key.get(key)))
    titles = [f"{r.started} · {r.run_id}" for r in drawn]
    return CellNight(
        cell=cell,
        strip=cell_strip(cell, drawn, last=nights),
        test_rates=rates,
        rate_svg=rate_sparkline_svg(rates, titles, label=f"{cell}: tests passed per run"),
        latest=latest,
        previous=previous,
        comparison=comparison,
        flaky=flaky,
        consistent=consistent,
        failing=tuple(failing),
        marks="".join(MARKS[run_outcome(r)] for r in drawn[-nights:]),
    )


def view(
    results_root: Path, folders: Mapping[str, Sequence[Path]], nights: int = DEFAULT_NIGHTS
) -> list[CellNight] | None:
    """Every cell's view, tonight's runs named by their run folders (in run order).

    None when the results root has no history yet (nothing recorded, nothing to show);
    a history that cannot be read is an InfraError for the caller to report.
    """
    path = history.default_path(results_root)
    if not path.is_file():
        return None
    with history.opened(path) as db:
        out = []
        for cell, dirs in folders.items():
            tonight = [r for d in dirs if (r := history_query.run_in_folder(db, d)) is not None]
            out.append(cell_night(db, cell, tonight, nights))
        return out
