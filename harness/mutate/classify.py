"""Did a suite notice the mutant? Killed, survived, or unknown, and the scores.

A suite kills a mutant when one of its tests fails, crashes or times out, or the dmesg
bracket fails it (the runner's "dmesg" result): each is the suite telling a developer
"something is wrong". Infrastructure trouble (error, missing, no results at all) says
nothing about the mutant: the engine retries it once and then calls it unknown, which
counts neither way.

The pristine kernel's own results (the baseline) are the reference: a test that does
not pass or skip there cannot tell a bug from the status quo, so it is ignored for
every mutant (and listed in the report).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum

from harness.results import SEVERITY, Outcome, TestResult

KILLING = frozenset({Outcome.FAIL, Outcome.CRASH, Outcome.TIMEOUT})
INFRA = frozenset({Outcome.ERROR, Outcome.MISSING})
# Baseline outcomes a test must have to be able to kill anything.
USABLE = frozenset({Outcome.PASS, Outcome.SKIP})
# The runner's results for the boot itself (a WARN/BUG while booting), not a suite.
BOOT = "boot"
# The scores' extra row: killed by at least one suite.
ANY = "(any suite)"


class Verdict(StrEnum):
    KILLED = "killed"
    SURVIVED = "survived"
    # This attempt's results say nothing (retried once, then UNKNOWN).
    INFRA = "infra"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Classified:
    verdict: Verdict
    # The deciding test and its reason, or what went wrong; one line.
    why: str = ""


Baseline = Mapping[str, Outcome]


def classify_suite(results: Sequence[TestResult], baseline: Baseline | None = None) -> Classified:
    """One suite's results for one mutant -> killed / survived / infra."""
    ignored = set() if baseline is None else {n for n, o in baseline.items() if o not in USABLE}
    considered = [r for r in results if r.name not in ignored]
    order = {o: i for i, o in enumerate(SEVERITY)}
    killers = sorted(
        (r for r in considered if r.outcome in KILLING), key=lambda r: order[r.outcome]
    )
    if killers:
        first = killers[0]
        more = f" (+{len(killers) - 1} more)" if len(killers) > 1 else ""
        return Classified(Verdict.KILLED, _line(first) + more)
    broken = [r for r in considered if r.outcome in INFRA]
    if broken:
        return Classified(Verdict.INFRA, _line(broken[0]))
    if not results:
        return Classified(Verdict.INFRA, "no results from the suite")
    if not considered:
        # Final, not retried: the suite cannot judge this kernel at all.
        return Classified(Verdict.UNKNOWN, "every result is one the pristine kernel fails")
    newly_skipped = [
        r.name
        for r in considered
        if r.outcome is Outcome.SKIP
        and baseline is not None
        and baseline.get(r.name) is Outcome.PASS
    ]
    why = ""
    if newly_skipped:
        # Not a kill (nothing failed), but the survivor's report should say it: the
        # mutant made the suite decide the feature is absent.
        why = f"{len(newly_skipped)} test(s) passed on the pristine kernel and skip now: "
        why += ", ".join(newly_skipped[:5])
    return Classified(Verdict.SURVIVED, why)


def classify_boot(results: Sequence[TestResult], baseline: Baseline | None = None) -> Classified:
    """The boot pseudo-suite: results appear only when booting printed a WARN/BUG."""
    if not results:
        return Classified(Verdict.SURVIVED)
    found = classify_suite(results, baseline)
    return found if found.verdict is Verdict.KILLED else Classified(Verdict.SURVIVED)


def _line(r: TestResult) -> str:
    reason = f": {r.reason}" if r.reason else ""
    return f"{r.name} {r.outcome.value}{reason}".splitlines()[0][:300]


def baseline_of(results: Iterable[TestResult]) -> dict[str, Outcome]:
    """test name -> outcome for one suite's pristine results (the worst, if repeated)."""
    order = {o: i for i, o in enumerate(SEVERITY)}
    out: dict[str, Outcome] = {}
    for r in results:
        old = out.get(r.name)
        if old is None or order[r.outcome] < order[old]:
            out[r.name] = r.outcome
    return out


# --- scores ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SuiteScore:
    suite: str
    killed: int
    survived: int
    unknown: int

    @property
    def score(self) -> float | None:
        """killed / (killed + survived); None when no mutant was decided."""
        decided = self.killed + self.survived
        return self.killed / decided if decided else None

    @property
    def percent(self) -> str:
        s = self.score
        return "n/a" if s is None else f"{100 * s:.0f}%"

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "score": self.score}


def score_table(
    verdicts: Iterable[Mapping[str, Verdict]], suites: Sequence[str]
) -> dict[str, SuiteScore]:
    """Per suite over the mutants that ran (each a suite -> verdict map), plus ANY.

    ANY: killed when some suite (or the boot) killed it, survived when every suite
    decided and none killed, else unknown.
    """
    tally = {s: [0, 0, 0] for s in [*suites, ANY]}
    slot = {Verdict.KILLED: 0, Verdict.SURVIVED: 1}
    for v in verdicts:
        for s in suites:
            tally[s][slot.get(v.get(s, Verdict.UNKNOWN), 2)] += 1
        mine = [v.get(s, Verdict.UNKNOWN) for s in suites]
        # A WARN or crash while booting fails every lab run of the mutant: the lab
        # caught it, though no suite gets the credit.
        if Verdict.KILLED in mine or v.get(BOOT) is Verdict.KILLED:
            tally[ANY][0] += 1
        elif all(x is Verdict.SURVIVED for x in mine):
            tally[ANY][1] += 1
        else:
            tally[ANY][2] += 1
    return {s: SuiteScore(s, *t) for s, t in tally.items()}
