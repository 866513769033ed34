"""The suites stage: each chosen suite bracketed by dmesg, with a lost VM turned into a
crash or error result and the suites after it listed as missing.

Whatever stops the run part-way (a lost VM, Ctrl-C/SIGTERM, a full disk, a failed
boot before any suite), every chosen suite ends up in summary.json: with the results
it got as far as it went, or as one `missing` row saying why it did not run
(mark_not_run, called by the runner on every early stop).
"""

from __future__ import annotations

import contextlib
import time

from harness import interrupt, suites
from harness.cellrun import CellRun
from harness.config import SuiteSpec
from harness.errors import LabError
from harness.paths import REPO_ROOT
from harness.results import Outcome, Recorder, TestResult
from harness.suites.dmesg import dmesg_verdict, new_dmesg_lines


def do_suites(cr: CellRun, chosen: dict[str, SuiteSpec]) -> bool:
    """Run every chosen suite; False when the VM was lost part-way (the suites after
    it are then listed as missing)."""
    assert cr.remote is not None
    for name, spec in chosen.items():
        with cr.stage(f"suite:{name}", f"({spec.kind})") as entry:
            run = _one_suite(cr, name, spec)
            entry["note"] = _counts_note(cr.rec, name)
            entry["verdict"] = cr.rec.record.suites.get(name, {}).get("outcome", "missing")
        if run.lost:
            mark_not_run(cr, chosen, f"the VM was lost in suite {name}")
            return False
    return True


def mark_not_run(cr: CellRun, chosen: dict[str, SuiteSpec], reason: str) -> None:
    """Every chosen suite without a verdict gets one now: a suite that was cut short
    keeps what it recorded, one that never started is a `missing` row with the reason.
    Never raises (it runs while the run is ending)."""
    rec = cr.rec
    for name, spec in chosen.items():
        if name in rec.record.suites:
            continue
        started = f"suite:{name}" in rec.record.stages
        with contextlib.suppress(LabError):
            if not any(r.suite == name for r in rec.record.results):
                why = f"did not finish: {reason}" if started else f"not run: {reason}"
                rec.add(TestResult(name, "(suite)", Outcome.MISSING, why))
                rec.suite_done(name, kind=spec.kind, seconds=0.0)
            else:
                rec.suite_done(name, kind=spec.kind, note=f"cut short: {reason}")


def _one_suite(cr: CellRun, name: str, spec: SuiteSpec) -> suites.SuiteRun:
    assert cr.remote is not None
    rec = cr.rec
    sdir = rec.suite_dir(name)
    start = time.monotonic()
    try:
        cr.rearm_warn_once()
        before = cr.dmesg()
    except KeyboardInterrupt as exc:
        _interrupted_between(rec, name, spec, exc, start)
        raise
    if before is not None:
        (sdir / "dmesg-before.txt").write_text(before)
    ctx = suites.Context(cr.remote, rec, cr.build, REPO_ROOT, cr.on_lost)
    if before is None:
        run = suites.SuiteRun(name, lost=True)
        outcome, why, excerpt = cr.on_lost()
        rec.add(TestResult(name, "(suite)", outcome, why, excerpt=excerpt))
    else:
        try:
            run = suites.run_suite(name, spec, ctx)
        except KeyboardInterrupt as exc:
            # The suite recorded what it got and what it was running (Suite.exec); its
            # verdict goes into summary.json before the run stops.
            if not any(r.suite == name for r in rec.record.results):
                _interrupted_between(rec, name, spec, exc, start)
            else:
                _close(rec, name, spec, start, interrupt.reason(exc))
            raise
    rec.account("tests", run.exec_seconds)
    try:
        after = None if run.lost else cr.dmesg()
    except KeyboardInterrupt as exc:
        _close(rec, name, spec, start, f"{interrupt.reason(exc)} (reading dmesg after it)")
        raise
    if after is not None:
        assert before is not None
        _dmesg_bracket(rec, name, before, after)
    elif not run.lost:
        # The suite finished but the VM no longer answers: say so here, or the reason
        # for everything missing afterwards would be silent.
        run.lost = True
        outcome, why, excerpt = cr.on_lost()
        rec.add(
            TestResult(name, "dmesg", outcome, f"no dmesg after the suite: {why}", excerpt=excerpt)
        )
    rec.suite_done(name, kind=spec.kind, seconds=round(run.seconds, 2), note=run.note)
    return run


def _close(rec: Recorder, name: str, spec: SuiteSpec, start: float, note: str) -> None:
    """The suite's verdict from what it recorded, while an interrupt is on its way."""
    with contextlib.suppress(LabError):
        rec.suite_done(name, kind=spec.kind, seconds=round(time.monotonic() - start, 2), note=note)


def _interrupted_between(
    rec: Recorder, name: str, spec: SuiteSpec, exc: BaseException, start: float
) -> None:
    """Interrupted before the suite's first command (reading dmesg): one missing row."""
    why = interrupt.reason(exc)
    with contextlib.suppress(LabError):
        rec.add(TestResult(name, "(suite)", Outcome.MISSING, f"{why} before it started"))
        rec.suite_done(name, kind=spec.kind, seconds=round(time.monotonic() - start, 2))


def _dmesg_bracket(rec: Recorder, name: str, before: str, after: str) -> None:
    """A new WARNING/BUG/... in dmesg while the suite ran fails it, lines quoted."""
    sdir = rec.suite_dir(name)
    (sdir / "dmesg-after.txt").write_text(after)
    (rec.cell_dir / "dmesg.txt").write_text(after)
    fresh = new_dmesg_lines(before, after)
    if fresh:
        (sdir / "dmesg-new.txt").write_text("\n".join(fresh) + "\n")
    verdict = dmesg_verdict(fresh)
    if verdict is not None:
        rec.add(
            TestResult(
                name,
                verdict.name,
                verdict.outcome,
                verdict.reason,
                excerpt=verdict.excerpt,
                log=rec.relative(sdir / "dmesg-new.txt"),
            )
        )


def _counts_note(rec: Recorder, suite: str) -> str:
    counts = rec.record.suites.get(suite, {}).get("counts", {})
    return "(" + ", ".join(f"{k} {v}" for k, v in counts.items() if v) + ")"
