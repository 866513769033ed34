"""The run: build -> image -> boot -> push -> suites -> collect -> report.

The stages live in harness/run_stages.py and harness/run_suites.py; this module only
orders them. Each stage is timed into summary.json. Results are recorded as they
arrive, and the collect/report steps run in a `finally`, so whatever stops the run (a
kernel crash, Ctrl-C, SIGTERM, a killed VM) leaves the console log, the results so far
and a report on disk, with the run marked incomplete (tuxmake's habit of always saving
metadata). The process's exit code is the one summary.json records.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path

from harness import expect, history_record, interrupt, junit, report, run_host
from harness.cellrun import CellRun
from harness.config import LabConfig, SuiteSpec
from harness.errors import InfraError, LabError, TreeError, UserError, os_error
from harness.interrupt import Interrupted
from harness.paths import REPO_ROOT
from harness.progress import Progress
from harness.results import EXIT_USER, Recorder
from harness.run_request import RunRequest as RunRequest  # callers name it runner.RunRequest
from harness.run_stages import collect, do_boot, do_build, do_connect, record_findings
from harness.run_suites import do_suites, mark_not_run


def choose_suites(lab: LabConfig, names: tuple[str, ...]) -> dict[str, SuiteSpec]:
    unknown = [n for n in names if n not in lab.suites]
    if unknown:
        raise UserError(
            f"unknown suite(s): {', '.join(unknown)} (known: {', '.join(sorted(lab.suites))})",
            "pass --suites with names from suites: in lab.yaml",
        )
    return {n: lab.suites[n] for n in names}


def check_kernel(lab: LabConfig, req: RunRequest) -> None:
    """A lab.yaml name or an existing folder; anything else is the user's mistake."""
    if req.kernel in lab.kernels or req.manifest is not None or req.bzimage is not None:
        return
    if Path(req.kernel).expanduser().is_dir():
        return
    raise UserError(
        f"unknown kernel {req.kernel!r}: not in lab.yaml (known: "
        f"{', '.join(sorted(lab.kernels))}) and not a folder",
        "pass --kernel with a name from kernels: in lab.yaml or the path of a kernel tree",
    )


def _bzimage(cr: CellRun, req: RunRequest) -> Path:
    if req.bzimage is not None:
        return req.bzimage
    assert cr.build is not None
    return cr.build.bzimage


# One whole run, as the A/B and a bisect step call it: run below, or a test's stand-in.
# Callers default to `run_one or runner.run` at call time, so a patched runner.run counts.
RunOne = Callable[[LabConfig, RunRequest, Progress], int]


def run(lab: LabConfig, req: RunRequest, progress: Progress | None = None) -> int:
    """The whole run; returns the exit code (DESIGN.md)."""
    p = progress or Progress()
    check_kernel(lab, req)
    chosen = choose_suites(lab, req.suites)
    # lab.yaml's `expect:` for this kernel (a path or a reused build's name: none).
    spec = lab.kernels.get(req.kernel)
    expected = tuple(spec.expect) if spec is not None else ()
    cr = CellRun(Recorder(req.results_root, req.cell, run_id=req.run_id), p)
    cr.rec.listener = p.result
    p.say(f"[run] {cr.rec.run_id}: {req.cell}, suites {', '.join(chosen)} -> {cr.rec.root}")
    complete, reason, forced_exit = False, "", None
    start = time.monotonic()
    try:
        with contextlib.ExitStack() as stack:
            if req.target == "qemu":
                do_build(cr, lab, req)
                network = any(s.network for s in chosen.values())
                do_boot(cr, lab, _bzimage(cr, req), stack, network)
                do_connect(cr, lab, stack, chosen, expect.payload(REPO_ROOT, expected))
                expect.check(cr, expected)
                complete = do_suites(cr, chosen)
                reason = "" if complete else cr.lost_reason or "the VM was lost during a suite"
            else:
                complete, reason = run_host.run_on_host(cr, lab, stack, chosen, req)
            with cr.stage("shutdown"):
                stack.close()
    except TreeError as exc:
        # The kernel does not build or its series does not apply: the cell's finding
        # (fail results, exit 1), and nothing is left to run.
        record_findings(cr, exc)
        complete = True
        p.say(f"[run] {exc.what.splitlines()[0]}")
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM (harness.interrupt)
        reason = interrupt.reason(exc)
        p.say(f"[run] {reason}: stopping the VM and writing what was collected")
    except (LabError, OSError) as exc:
        if isinstance(exc, OSError):  # a full disk, most likely
            exc = os_error(exc)
        reason = exc.what.splitlines()[0]
        if isinstance(exc, UserError):
            forced_exit = EXIT_USER
        cr.rec.error(exc.message)
        kind = "user error" if forced_exit == EXIT_USER else "infrastructure error"
        p.say(f"[run] {kind}: {exc.message}")
    except Exception as exc:  # a harness bug: still leave the evidence behind
        reason = f"harness error: {type(exc).__name__}: {exc}"
        cr.rec.error(reason)
        p.say(f"[run] {reason}")
    finally:
        if not complete:
            mark_not_run(cr, chosen, reason or "the run stopped early")
        manifest = cr.build.manifest if cr.build is not None else req.manifest
        collect(cr, req.reproducer(manifest))
        record = cr.rec.finish(complete, reason, forced_exit=forced_exit)
        html, md = cr.rec.root / "report.html", cr.rec.root / "report.md"
        try:
            junit.write(record.results, cr.rec.root / "junit.xml", req.cell)
            html, md = report.render(record, cr.rec.root)
        except OSError as exc:  # summary.json is written; say why the rest is not
            p.say(f"[run] could not write the report: {os_error(exc).what}")
    # The summary is final: index it (a warning at worst, never another exit code).
    history_record.record_or_warn(req.history_root or req.results_root, cr.rec.root, p.say)
    code = record.exit_code
    p.say(
        f"\nverdict: {record.verdict} (exit {code}) in {time.monotonic() - start:.0f}s; "
        + ", ".join(f"{k} {v}" for k, v in record.counts.items() if v)
    )
    p.say(f"harness overhead: {record.harness_overhead_s:.1f}s")
    p.say(f"report: {html}\n        {md}")
    return code


__all__ = ["InfraError", "Interrupted", "Progress", "RunRequest", "run"]
