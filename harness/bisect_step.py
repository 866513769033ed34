"""One `lab bisect` step: a lab run of the commit git checked out, as git bisect run's exit."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from harness import runner, selection
from harness.bisect_git import git
from harness.config import LabConfig
from harness.progress import Progress
from harness.results import EXIT_OK, EXIT_TEST_FAILED, load_summary

EXIT_GOOD = 0
EXIT_BAD = 1
EXIT_SKIP = 125
# git bisect run stops on an exit code of 128 or more: a step that was interrupted.
EXIT_STOP = 130
STEPS = "steps.jsonl"


@dataclass(frozen=True)
class Step:
    n: int
    commit: str
    subject: str
    run_id: str
    exit_code: int
    verdict: str
    build: str  # the build stage's status: ok, failed, ...
    says: str  # good, bad, skip, stop
    seconds: float

    @property
    def tells_git(self) -> int:
        return {"good": EXIT_GOOD, "bad": EXIT_BAD, "skip": EXIT_SKIP}.get(self.says, EXIT_STOP)


def judge(exit_code: int, build: str, incomplete_reason: str) -> str:
    """What a step's run says about its commit (the table in harness/bisect.py's docstring)."""
    if "interrupted" in incomplete_reason:
        return "stop"
    if build not in ("ok", ""):
        return "skip"
    if exit_code == EXIT_OK:
        return "good"
    if exit_code == EXIT_TEST_FAILED:
        return "bad"
    return "skip"


def load_steps(folder: Path) -> list[Step]:
    path = folder / STEPS
    if not path.is_file():
        return []
    return [Step(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def step(
    lab: LabConfig,
    sel: selection.Selection,
    tree: Path,
    config: str,
    folder: Path,
    history_root: Path,
    progress: Progress | None = None,
    run_one: runner.RunOne | None = None,
) -> int:
    """One bisection step on whatever commit `tree` has checked out; the exit code for
    git bisect run."""
    p = progress or Progress()
    narrowed = selection.narrow(lab, sel, only=True)
    commit = git("-C", str(tree), "rev-parse", "HEAD")
    subject = git("-C", str(tree), "log", "-1", "--format=%s", "HEAD")
    n = len(load_steps(folder)) + 1
    run_id = f"step-{n:02d}-{commit[:12]}"
    p.say(f"[bisect] step {n}: {commit[:12]} {subject}")
    req = runner.RunRequest(
        kernel=str(tree),
        config=config,
        suites=(sel.suite,),
        results_root=folder,
        run_id=run_id,
        history_root=history_root,
    )
    start = time.monotonic()
    code = (run_one or runner.run)(narrowed, req, p)
    try:
        summary = load_summary(folder / run_id)
        build = str(summary.stages.get("build", {}).get("status", ""))
        reason, verdict = summary.incomplete_reason, summary.verdict
    except (OSError, ValueError, KeyError, TypeError):
        build, reason, verdict = "", "", f"no summary (exit {code})"
    says = judge(code, build, reason)
    done = Step(n, commit, subject, run_id, code, verdict, build, says,
                round(time.monotonic() - start, 1))  # fmt: skip
    with (folder / STEPS).open("a") as f:
        f.write(json.dumps(asdict(done)) + "\n")
    p.say(f"[bisect] step {n}: {commit[:12]}: {verdict}, build {build or '?'} -> {says}")
    return done.tells_git
