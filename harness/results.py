"""Classified results of a run, written to disk the moment they arrive.

A run is one folder, results/<run-id>/, with results/latest pointing at it. Every test
result is appended to results.jsonl and summary.json is rewritten after each one, so a
crash, Ctrl-C or a killed VM later in the run cannot lose what was already collected:
the summary simply stays marked incomplete (DESIGN.md, "Outcomes, never silent").

A full disk must not cost the verdict either: the run folder starts with a few MiB set
aside (RESERVE), the first write that fails raises a "disk full" InfraError (the run
ends with that reason) and later ones only keep the record in memory; finish() gives
the reserved space back and writes summary.json and results.jsonl whole, so the
summary on disk always says what the process's exit code says.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from harness import names
from harness.errors import InfraError, os_error


class Outcome(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"
    ERROR = "error"
    CRASH = "crash"
    TIMEOUT = "timeout"
    MISSING = "missing"


# Worst first: the order a suite's or a run's verdict is picked in, and the report's order.
SEVERITY: tuple[Outcome, ...] = (
    Outcome.CRASH,
    Outcome.FAIL,
    Outcome.TIMEOUT,
    Outcome.ERROR,
    Outcome.MISSING,
    Outcome.SKIP,
    Outcome.PASS,
)
# Exit codes (DESIGN.md): a real test failure or crash outranks broken infrastructure,
# because it is a finding about the kernel no matter what went wrong afterwards.
_TEST_PROBLEMS = frozenset({Outcome.FAIL, Outcome.CRASH})
_INFRA_PROBLEMS = frozenset({Outcome.ERROR, Outcome.TIMEOUT, Outcome.MISSING})

EXIT_OK = 0
EXIT_TEST_FAILED = 1
EXIT_INFRA = 2
EXIT_USER = 3

# Space set aside in each run folder for the final summary, junit.xml and report.
RESERVE = ".space-reserve"
RESERVE_BYTES = 8 << 20


@dataclass(frozen=True)
class TestResult:
    """One test (or test case) of one suite, with everything the report quotes."""

    __test__ = False  # not a pytest test class, despite the name

    suite: str
    name: str
    outcome: Outcome
    # Why it was skipped, what failed, what went wrong: one line.
    reason: str = ""
    seconds: float = 0.0
    # Lines quoted in the report (assertion output, new dmesg lines, a console tail).
    excerpt: str = ""
    # The raw output this result came from, relative to the run folder.
    log: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["outcome"] = self.outcome.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TestResult:
        return cls(**{**data, "outcome": Outcome(data["outcome"])})


def worst(outcomes: Iterable[Outcome]) -> Outcome | None:
    present = set(outcomes)
    return next((o for o in SEVERITY if o in present), None)


def suite_outcome(outcomes: Iterable[Outcome]) -> Outcome | None:
    """A suite's one-word verdict: its worst problem, else pass if anything passed."""
    present = set(outcomes)
    if not present:
        return None
    problems = present - {Outcome.PASS, Outcome.SKIP}
    if problems:
        return worst(problems)
    return Outcome.PASS if Outcome.PASS in present else Outcome.SKIP


def counts(results: Iterable[TestResult]) -> dict[str, int]:
    tally = {o.value: 0 for o in Outcome}
    for r in results:
        tally[r.outcome.value] += 1
    return tally


def exit_code(results: Iterable[TestResult], complete: bool) -> int:
    """0 all passed or skipped; 1 a test failed or crashed; 2 infra, timeout, missing."""
    present = {r.outcome for r in results}
    if present & _TEST_PROBLEMS:
        return EXIT_TEST_FAILED
    if present & _INFRA_PROBLEMS or not complete:
        return EXIT_INFRA
    return EXIT_OK


def verdict_text(code: int, complete: bool) -> str:
    text = {
        EXIT_OK: "PASS",
        EXIT_TEST_FAILED: "FAIL",
        EXIT_INFRA: "ERROR",
        EXIT_USER: "USER ERROR",
    }[code]
    return text if complete else f"{text} (incomplete run)"


def new_run_id(now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now()
    return now.strftime("%Y%m%d-%H%M%S-") + f"{os.getpid() % 100000:05d}"


def _write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@dataclass
class RunRecord:
    """Everything summary.json holds; mutated while the run goes, saved after each step."""

    run_id: str
    started: str
    cell: str
    complete: bool = False
    incomplete_reason: str = ""
    exit_code: int = EXIT_INFRA
    verdict: str = ""
    wall_s: float = 0.0
    harness_overhead_s: float | None = None
    # Where wall time went that is not overhead: make, boot, test execution.
    accounted_s: dict[str, float] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    suites: dict[str, dict[str, Any]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    results: list[TestResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # A series from mail (mbox kernels): per patch index, subject, message_id, status.
    series: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["results"] = [r.to_json() for r in self.results]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        results = [TestResult.from_json(r) for r in data.get("results", [])]
        return cls(**{**data, "results": results})


class Recorder:
    """Owns results/<run-id>/: appends results as they arrive, keeps summary.json current."""

    def __init__(self, results_root: Path, cell: str, run_id: str | None = None) -> None:
        # Both become folder names under results_root: sanitised whatever the caller
        # passed (harness/names.py), so nothing lands outside it.
        self.run_id = names.folder(run_id) if run_id else new_run_id()
        self.root = results_root / self.run_id
        self.root.mkdir(parents=True, exist_ok=False)
        self.forced_exit: int | None = None
        # The first write that failed (a full disk): later writes are not attempted.
        self.write_failure: InfraError | None = None
        self._reserve()
        self.cell = names.folder(cell)
        self.cell_dir = self.root / self.cell
        self.cell_dir.mkdir()
        self._t0 = time.monotonic()
        # Called with each result as it is recorded (the terminal's progress lines).
        self.listener: Callable[[TestResult], None] | None = None
        self.record = RunRecord(
            run_id=self.run_id,
            started=dt.datetime.now().isoformat(timespec="seconds"),
            cell=self.cell,
            incomplete_reason="the run is still going (or was killed)",
        )
        self._point_latest(results_root)
        self.save()

    def _point_latest(self, results_root: Path) -> None:
        latest = results_root / "latest"
        tmp = results_root / f".latest-{self.run_id}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(self.run_id)
        os.replace(tmp, latest)

    def suite_dir(self, suite: str) -> Path:
        path = self.cell_dir / suite
        path.mkdir(parents=True, exist_ok=True)
        return path

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.root))

    # --- results ---------------------------------------------------------------------

    def add(self, result: TestResult) -> None:
        """Record one result now: a line in results.jsonl, then a fresh summary.json."""
        self.record.results.append(result)
        if self.listener is not None:
            self.listener(result)
        self._attempt(lambda: self._append(result))
        self.save()

    def _append(self, result: TestResult) -> None:
        with (self.root / "results.jsonl").open("a") as sink:
            sink.write(json.dumps(result.to_json()) + "\n")
            sink.flush()
            os.fsync(sink.fileno())

    def suite_done(self, suite: str, **info: Any) -> None:
        mine = [r for r in self.record.results if r.suite == suite]
        outcome = suite_outcome(r.outcome for r in mine)
        self.record.suites[suite] = {
            "outcome": outcome.value if outcome else "missing",
            "counts": counts(mine),
            **info,
        }
        self.save()

    # --- stages and environment ------------------------------------------------------

    @contextmanager
    def stage(self, name: str) -> Iterator[dict[str, Any]]:
        """Time a stage; its entry says ok/failed/interrupted even when it raises."""
        entry: dict[str, Any] = {"status": "running", "seconds": 0.0}
        self.record.stages[name] = entry
        self.save()
        start = time.monotonic()
        try:
            yield entry
        except BaseException as exc:
            entry["status"] = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            entry["error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise
        else:
            entry["status"] = "ok"
        finally:
            entry["seconds"] = round(time.monotonic() - start, 2)
            self.save()

    def environment(self, **info: Any) -> None:
        self.record.environment.update(info)
        self.save()

    def series(self, patches: Iterable[dict[str, Any]]) -> None:
        """The kernel's series from mail, patch by patch (the report's Series section)."""
        self.record.series = [dict(p) for p in patches]
        self.save()

    def account(self, what: str, seconds: float) -> None:
        """Add time spent in make, boot or test execution (not harness overhead)."""
        self.record.accounted_s[what] = round(self.record.accounted_s.get(what, 0.0) + seconds, 2)

    def error(self, message: str) -> None:
        """Note why the run failed; never raises (it is called on the way out)."""
        self.record.errors.append(message)
        with contextlib.suppress(InfraError):
            self.save()

    # --- summary ---------------------------------------------------------------------

    # --- a full disk ------------------------------------------------------------------

    def _reserve(self) -> None:
        with contextlib.suppress(OSError):
            fd = os.open(self.root / RESERVE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.posix_fallocate(fd, 0, RESERVE_BYTES)
            finally:
                os.close(fd)

    def _release_reserve(self) -> None:
        with contextlib.suppress(OSError):
            (self.root / RESERVE).unlink(missing_ok=True)

    def _attempt(self, write: Callable[[], None]) -> None:
        """A write to the run folder: after a failure nothing more is attempted until
        finish(); the first failure raises (the run ends with it)."""
        if self.write_failure is not None:
            return
        try:
            write()
        except OSError as exc:
            self.write_failure = os_error(exc)
            self.record.errors.append(self.write_failure.what)
            raise self.write_failure from None

    def save(self) -> None:
        self._attempt(self._save)

    def _save(self) -> None:
        rec = self.record
        rec.wall_s = round(time.monotonic() - self._t0, 2)
        rec.counts = counts(rec.results)
        rec.exit_code = (
            self.forced_exit
            if self.forced_exit is not None
            else exit_code(rec.results, rec.complete)
        )
        rec.verdict = verdict_text(rec.exit_code, rec.complete)
        rec.harness_overhead_s = round(max(0.0, rec.wall_s - sum(rec.accounted_s.values())), 2)
        _write_atomic(self.root / "summary.json", json.dumps(rec.to_json(), indent=2) + "\n")

    def finish(
        self, complete: bool, reason: str = "", *, forced_exit: int | None = None
    ) -> RunRecord:
        """Close the record. forced_exit: the run ended on the user's mistake (exit 3),
        which no result says; summary.json must agree with the process's exit code.

        Never raises: the reserved space is given back first, then results.jsonl and
        summary.json are written whole (after a failed write they are behind)."""
        self.forced_exit = forced_exit
        self.record.complete = complete
        self.record.incomplete_reason = "" if complete else (reason or "the run stopped early")
        self._release_reserve()
        try:
            if self.write_failure is not None:
                lines = "".join(json.dumps(r.to_json()) + "\n" for r in self.record.results)
                _write_atomic(self.root / "results.jsonl", lines)
            self._save()
        except OSError as exc:
            # Not even the reserve helped: the summary on disk is the last one written.
            self.write_failure = self.write_failure or os_error(exc)
        return self.record


def load_summary(run_dir: Path) -> RunRecord:
    return RunRecord.from_json(json.loads((run_dir / "summary.json").read_text()))
