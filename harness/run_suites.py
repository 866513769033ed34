"""The suites stage: each chosen suite bracketed by dmesg, with a lost VM turned into a
crash or error result and the suites after it listed as missing."""

from __future__ import annotations

from harness import suites
from harness.cellrun import CellRun
from harness.config import SuiteSpec
from harness.paths import REPO_ROOT
from harness.results import Outcome, Recorder, TestResult
from harness.suites.dmesg import dmesg_verdict, new_dmesg_lines


def do_suites(cr: CellRun, chosen: dict[str, SuiteSpec]) -> bool:
    """Run every chosen suite; False when the VM was lost part-way."""
    assert cr.remote is not None
    names = list(chosen)
    for i, name in enumerate(names):
        spec = chosen[name]
        with cr.stage(f"suite:{name}", f"({spec.kind})") as entry:
            run = _one_suite(cr, name, spec)
            entry["note"] = _counts_note(cr.rec, name)
        if run.lost:
            for rest in names[i + 1 :]:
                cr.rec.add(
                    TestResult(
                        rest,
                        "(suite)",
                        Outcome.MISSING,
                        "not run: the VM was lost in an earlier suite",
                    )
                )
                cr.rec.suite_done(rest, kind=chosen[rest].kind, seconds=0.0)
            return False
    return True


def _one_suite(cr: CellRun, name: str, spec: SuiteSpec) -> suites.SuiteRun:
    assert cr.remote is not None
    rec = cr.rec
    sdir = rec.suite_dir(name)
    before = cr.dmesg()
    if before is not None:
        (sdir / "dmesg-before.txt").write_text(before)
    ctx = suites.Context(cr.remote, rec, cr.build, REPO_ROOT, cr.on_lost)
    if before is None:
        run = suites.SuiteRun(name, lost=True)
        outcome, why, excerpt = cr.on_lost()
        rec.add(TestResult(name, "(suite)", outcome, why, excerpt=excerpt))
    else:
        run = suites.run_suite(name, spec, ctx)
    rec.account("tests", run.exec_seconds)
    after = None if run.lost else cr.dmesg()
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
