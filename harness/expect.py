"""Expected features: a kernel that should carry the series must probe with it.

lab.yaml's `kernels.<name>.expect: [attrs2_gmem, ...]` names guest-probe features
(harness/features.py). After boot the guest probe (tests/guest/probe.py, pushed with
the payload) runs once; each expected feature gets a result in suite `expect`: pass
when the probe found it, fail "expected feature X absent: <evidence>" when not. So a
kernel on the wrong branch, with the series patched out or hidden by its config,
fails the cell instead of turning ~55 series tests into a green wall of skips.
Without `expect` nothing runs and nothing is recorded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import features
from harness.cellrun import CellRun
from harness.results import Outcome, TestResult
from harness.suites.base import PAYLOAD, tail

SUITE = "expect"
# What the probe needs in the guest: the guest suite's folder (probe.py and kvm/).
GUEST_DIR = "tests/guest"
PROBE = f"{GUEST_DIR}/probe.py"
PROBE_TIMEOUT_S = 300


def payload(repo_root: Path, expected: Sequence[str]) -> list[tuple[Path, str]]:
    """What the probe needs pushed (nothing when nothing is expected)."""
    return [(repo_root / GUEST_DIR, GUEST_DIR)] if expected else []


def probe_argv(expected: Sequence[str]) -> list[str]:
    # The vCPU smoke test costs seconds under TCG: only when it is expected.
    return ["python3", PROBE] + ([] if "vcpus_run" in expected else ["--no-vcpu"])


def check(cr: CellRun, expected: Sequence[str]) -> None:
    """Probe the guest and record one result per expected feature."""
    if not expected:
        return
    assert cr.remote is not None
    rec = cr.rec
    log = rec.cell_dir / "probe.log"
    with cr.stage(SUITE, ", ".join(expected)) as entry:
        ran = cr.remote.run(probe_argv(expected), timeout_s=PROBE_TIMEOUT_S, cwd=PAYLOAD, log=log)
        rec.account("tests", ran.seconds)
        rel = rec.relative(log)
        probed = _parse(ran.stdout) if ran.exit_code == 0 and not ran.lost else None
        if probed is None:
            if ran.lost:
                outcome, why, excerpt = cr.on_lost()
            else:
                outcome, excerpt = Outcome.ERROR, tail(ran.stdout + ran.stderr)
                why = f"the guest probe printed no feature JSON (exit {ran.exit_code})"
            for name in expected:
                rec.add(TestResult(SUITE, name, outcome, why, excerpt=excerpt, log=rel))
        else:
            (rec.cell_dir / "probe.json").write_text(json.dumps(probed, indent=2) + "\n")
            for name in expected:
                rec.add(_result(name, probed, rel))
            absent = [n for n in expected if probed.get(n) is not True]
            entry["note"] = f"(absent: {', '.join(absent)})" if absent else "(all present)"
    rec.suite_done(SUITE, kind=SUITE, seconds=round(ran.seconds, 2))


def _parse(stdout: str) -> dict[str, Any] | None:
    try:
        data = json.loads(stdout)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _result(name: str, probed: dict[str, Any], log: str) -> TestResult:
    why = features.evidence(name, probed)
    if probed.get(name) is True:
        return TestResult(SUITE, name, Outcome.PASS, f"expected feature {name} present", log=log)
    return TestResult(
        SUITE, name, Outcome.FAIL, f"expected feature {name} absent: {why}", excerpt=why, log=log
    )
