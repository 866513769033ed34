"""`lab bisect`: which commit broke a test, with `git bisect run` and the lab as its script.

    lab bisect --kernel K --good REV --bad REV --test SUITE[:TEST]

K is a git checkout (a path, or a lab.yaml `path:` kernel) or a lab.yaml `git:` kernel
(its ref is fetched with its history into a bare repository under the cache). The
bisection never touches the user's checkout: it runs in a separate worktree of the
repository (default under $LAB_CACHE/bisect/trees/, kept afterwards so the next
bisection of the same repository builds incrementally; --worktree chooses it), with
its own bisect state (refs/bisect is per worktree; the git plumbing:
harness/bisect_git.py).

Each step (`lab bisect --step`, run by git in the worktree; harness/bisect_step.py) is
one `lab run` of the worktree at the commit git checked out, with only the chosen suite
(narrowed to the one test when given; harness/selection.py), kept in the bisection's
folder and recorded in the history. Its exit code tells git:
      0  good: the test passed (or skipped)
      1  bad: the test failed or crashed
    125  skip: the commit does not build, or the run hit an infrastructure problem
         (no boot, SSH lost, a timeout: not evidence either way)
    130  stop the bisection: the step was interrupted (Ctrl-C, SIGTERM)

The bisection's folder, results/bisect-<kernel>-<time>/, holds every step's run
folder, steps.jsonl (one line per step), git's own log and bisect.md/bisect.json with
the first bad commit (or, when skipped commits hide it, the candidates).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness import names, selection
from harness.bisect_git import default_worktree, git, git_env, git_ok, repository, resolve, worktree
from harness.bisect_step import Step, load_steps
from harness.config import LabConfig
from harness.errors import InfraError, UserError
from harness.paths import REPO_ROOT, new_folder
from harness.progress import Progress
from harness.results import EXIT_INFRA, EXIT_OK

# --- the bisection ------------------------------------------------------------------


@dataclass(frozen=True)
class BisectRequest:
    kernel: str
    good: str
    bad: str
    test: selection.Selection
    config: str
    results_root: Path
    worktree: Path | None = None
    # The lab file the steps load (the one this command loaded), None: the default.
    lab_file: Path | None = None


@dataclass
class Result:
    found: str | None  # the first bad commit
    candidates: list[str] = field(default_factory=list)  # when skips hide it
    steps: list[Step] = field(default_factory=list)
    wall_s: float = 0.0
    error: str = ""

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.found else EXIT_INFRA


def step_argv(req: BisectRequest, tree: Path, folder: Path) -> list[str]:
    lab_args = ["--lab", str(req.lab_file.resolve())] if req.lab_file else []
    return [
        sys.executable, "-m", "harness.cli", *lab_args, "bisect", "--step",
        "--kernel", str(tree), "--test", str(req.test), "--config", req.config,
        "--results", str(folder), "--history", str(req.results_root),
    ]  # fmt: skip


def _first_bad(output: str, tree: Path) -> tuple[str | None, list[str]]:
    if "is the first bad commit" in output:
        return git("-C", str(tree), "rev-parse", "refs/bisect/bad"), []
    if "first bad commit could be any of" in output:
        tail = output.split("could be any of:", 1)[1]
        shas = [w for w in tail.split() if re.fullmatch(r"[0-9a-f]{40}", w)]
        return None, shas
    return None, []


def run_bisect(lab: LabConfig, req: BisectRequest, progress: Progress | None = None) -> int:
    p = progress or Progress()
    selection.narrow(lab, req.test, only=True)  # a bad --test fails before any work
    if req.config not in lab.configs:
        raise UserError(
            f"unknown config set {req.config!r} (known: {', '.join(sorted(lab.configs))})",
            "pass --config with a name from configs: in lab.yaml",
        )
    repo = repository(lab, req.kernel)
    good, bad = resolve(repo, req.good, "good"), resolve(repo, req.bad, "bad")
    if good == bad:
        raise UserError("--good and --bad name the same commit", "name two different commits")
    if not git_ok("-C", str(repo), "merge-base", "--is-ancestor", good, bad):
        raise UserError(
            f"--good {req.good} is not an ancestor of --bad {req.bad}",
            "pass an older good commit (git merge-base --is-ancestor GOOD BAD must succeed)",
        )
    count = int(git("-C", str(repo), "rev-list", "--count", f"{good}..{bad}"))
    tree = worktree(repo, (req.worktree or default_worktree(repo)).resolve(), bad)
    label = names.slug(Path(req.kernel).name or req.kernel)
    folder = new_folder(req.results_root, f"bisect-{label}-{dt.datetime.now():%Y%m%d-%H%M%S}")
    p.say(
        f"[bisect] {count} commits after {good[:12]} up to {bad[:12]} in {repo}; worktree "
        f"{tree}; each step runs {req.test} -> {folder}"
    )
    start = time.monotonic()
    # git runs the steps in the worktree: the lab's package must come from this checkout.
    paths = [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]
    env = {**git_env(), "PYTHONPATH": os.pathsep.join(x for x in paths if x)}
    git("-C", str(tree), "bisect", "reset", "--quiet", check=False)
    git("-C", str(tree), "bisect", "start", bad, good)
    log = folder / "git-bisect-run.log"
    output = []
    try:
        with subprocess.Popen(
            ["git", "-C", str(tree), "bisect", "run", *step_argv(req, tree, folder)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ) as proc, log.open("w") as sink:  # fmt: skip
            assert proc.stdout is not None
            for line in proc.stdout:
                sink.write(line)
                sink.flush()
                output.append(line)
                p.say(line.rstrip("\n"))
        text = "".join(output)
        found, candidates = _first_bad(text, tree)
        bisect_log = git("-C", str(tree), "bisect", "log", check=False)
        (folder / "git-bisect-log.txt").write_text(bisect_log + "\n")
    finally:
        git("-C", str(tree), "bisect", "reset", "--quiet", check=False)
    result = Result(found, candidates, load_steps(folder), round(time.monotonic() - start, 1))
    if found is None and not candidates:
        result.error = (text.strip().splitlines() or ["git bisect run printed nothing"])[-1]
    write_result(folder, req, repo, good, bad, count, result)
    _say_result(p, result, folder, repo)
    if result.error and any(s.says == "stop" for s in result.steps):
        raise InfraError(f"the bisection was interrupted: {result.error}", f"see {folder}")
    return result.exit_code


def _subject(repo: Path, sha: str) -> str:
    return git("-C", str(repo), "log", "-1", "--format=%h %s", sha, check=False)


def builds(steps: list[Step]) -> int:
    """Steps that built (or tried to build) a kernel."""
    return sum(1 for s in steps if s.build in ("ok", "failed"))


def _say_result(p: Progress, r: Result, folder: Path, repo: Path) -> None:
    built = builds(r.steps)
    p.say(f"\n[bisect] {len(r.steps)} steps ({built} builds) in {r.wall_s:.0f}s:")
    for s in r.steps:
        p.say(
            f"[bisect]   {s.n}. {s.commit[:12]} {s.subject[:60]}: {s.verdict} -> {s.says} "
            f"({s.seconds:.0f}s)"
        )
    if r.found:
        p.say(f"[bisect] first bad commit: {r.found} ({_subject(repo, r.found)})")
    elif r.candidates:
        p.say("[bisect] skipped commits hide it; the first bad commit is one of:")
        for sha in r.candidates:
            p.say(f"[bisect]   {_subject(repo, sha)}")
    else:
        p.say(f"[bisect] no answer: {r.error}")
    p.say(f"[bisect] {folder / 'bisect.md'}")


def write_result(
    folder: Path,
    req: BisectRequest,
    repo: Path,
    good: str,
    bad: str,
    count: int,
    r: Result,
) -> None:
    data = {
        "kernel": req.kernel,
        "repository": str(repo),
        "good": good,
        "bad": bad,
        "commits": count,
        "test": str(req.test),
        "config": req.config,
        "first_bad": r.found,
        "first_bad_subject": _subject(repo, r.found) if r.found else None,
        "candidates": r.candidates,
        "steps": [asdict(s) for s in r.steps],
        "builds": builds(r.steps),
        "wall_s": r.wall_s,
        "error": r.error,
    }
    (folder / "bisect.json").write_text(json.dumps(data, indent=2) + "\n")
    lines = [
        f"# gmemlab bisect: {req.test} on {req.kernel}",
        "",
        f"{count} commits after {good[:12]} (good) up to {bad[:12]} (bad) in `{repo}`, "
        f"config {req.config}; {len(r.steps)} steps in {r.wall_s:.0f} s.",
        "",
    ]
    if r.found:
        lines += [f"**First bad commit: {_subject(repo, r.found)}** (`{r.found}`)", ""]
    elif r.candidates:
        lines += ["**Skipped commits hide the first bad commit; it is one of:**", ""]
        lines += [f"- {_subject(repo, sha)}" for sha in r.candidates] + [""]
    else:
        lines += [f"**No answer:** {r.error}", ""]
    lines += [
        "| step | commit | subject | verdict | build | says | seconds | run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in r.steps:
        subject = s.subject.replace("|", "\\|")
        lines.append(
            f"| {s.n} | {s.commit[:12]} | {subject} | {s.verdict} | {s.build} | {s.says} | "
            f"{s.seconds:.0f} | {s.run_id}/report.md |"
        )
    (folder / "bisect.md").write_text("\n".join(lines) + "\n")
