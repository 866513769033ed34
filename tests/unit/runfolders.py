"""Run folders for the history and compare tests, written by the real Recorder."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.results import Outcome, Recorder, RunRecord, TestResult

# (suite, test) -> outcome, or (outcome, reason) where the reason matters.
Plan = Mapping[tuple[str, str], Outcome | tuple[Outcome, str]]

BASE_ENV: dict[str, Any] = {
    "kernel": "mainline",
    "config": "lab",
    "kernel_commit": "c0ffee",
    "kernel_describe": "v7.3",
    "config_hash": "cfg1",
    "accelerator": "kvm",
    "qemu_version": "10.0.2",
}


def make_run(
    root: Path,
    run_id: str,
    plan: Plan,
    *,
    started: str,
    cell: str = "mainline-lab-qemu",
    complete: bool = True,
    **env: Any,
) -> Path:
    """A finished run folder under root with these results; returns the folder."""
    rec = Recorder(root, cell, run_id=run_id)
    rec.environment(**{**BASE_ENV, **env})
    for (suite, test), spec in plan.items():
        outcome, reason = spec if isinstance(spec, tuple) else (spec, "")
        rec.add(TestResult(suite, test, outcome, reason=reason, seconds=1.0))
    # The start time decides the order of nights; the Recorder stamps "now".
    rec.record.started = started
    record: RunRecord = rec.finish(complete=complete)
    assert record.run_id == run_id
    return rec.root
