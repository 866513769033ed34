"""lab bisect: git plumbing, the step's verdict, the result; no kernel, no VM.

The bisection tests run the real `git bisect run` on a small repository whose "lab"
step is a shell script deciding good/bad/skip from a file in the commit (the real step
is `lab bisect --step`, tested here in process with a fake run).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path

import pytest

from harness import bisect, bisect_step, cli, config, runner, selection
from harness.config import LabConfig
from harness.errors import UserError
from harness.progress import Progress
from harness.results import Outcome, Recorder, TestResult

SEL = selection.parse("gmem-ioctl:test_guest_memfd.py::test_file_size")


def sh(*args: str, cwd: Path) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@x",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@x",
    }
    return subprocess.run(
        args, cwd=cwd, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


def make_repo(path: Path) -> list[str]:
    """A root commit and c1..c8: c3 and c6 "do not build", c5 breaks the test."""
    path.mkdir(parents=True)
    sh("git", "init", "-q", "-b", "main", cwd=path)
    (path / "state").write_text("0\n")
    sh("git", "add", "-A", cwd=path)
    sh("git", "commit", "-qm", "root: the good tree", cwd=path)
    shas = [sh("git", "rev-parse", "HEAD", cwd=path)]
    subjects = {3: "break the build", 5: "the breaking change", 6: "break the build again"}
    for i in range(1, 9):
        (path / "state").write_text(f"{i}\n")
        sh("git", "commit", "-qam", subjects.get(i, f"change {i}"), cwd=path)
        shas.append(sh("git", "rev-parse", "HEAD", cwd=path))
    return shas


STEP_SCRIPT = """#!/bin/sh
# Stands in for `lab bisect --step`: records a steps.jsonl line like the real step.
n=$(cat state)
commit=$(git rev-parse HEAD)
case $n in 3|6) says=skip; code=125; build=failed;; *) build=ok;
  if [ "$n" -ge 5 ]; then says=bad; code=1; else says=good; code=0; fi;; esac
steps="$1/steps.jsonl"
k=$(( $(cat "$steps" 2>/dev/null | wc -l) + 1 ))
fmt='{"n": %d, "commit": "%s", "subject": "s", "run_id": "step-%d", "exit_code": %d, '
fmt="$fmt"'"verdict": "v", "build": "%s", "says": "%s", "seconds": 1.0}\\n'
printf "$fmt" "$k" "$commit" "$k" "$code" "$build" "$says" >> "$steps"
exit $code
"""


@pytest.fixture
def lab() -> LabConfig:
    return config.load()


def fake_steps(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    script = tmp_path / "step.sh"
    script.write_text(STEP_SCRIPT)
    script.chmod(0o755)
    monkeypatch.setattr(bisect, "step_argv", lambda req, tree, folder: [str(script), str(folder)])


def request(tmp_path: Path, repo: Path, good: str, bad: str) -> bisect.BisectRequest:
    return bisect.BisectRequest(
        kernel=str(repo),
        good=good,
        bad=bad,
        test=SEL,
        config="lab",
        results_root=tmp_path / "results",
        worktree=tmp_path / "wt",
    )


def test_finds_the_breaking_commit_skipping_the_unbuildable(
    tmp_path: Path, lab: LabConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "linux"
    shas = make_repo(repo)
    head_before = sh("git", "rev-parse", "HEAD", cwd=repo)
    fake_steps(monkeypatch, tmp_path)
    out = io.StringIO()
    code = bisect.run_bisect(lab, request(tmp_path, repo, shas[0], "main"), Progress(out))
    assert code == 0, out.getvalue()
    (folder,) = (tmp_path / "results").glob("bisect-linux-*")
    data = json.loads((folder / "bisect.json").read_text())
    assert data["first_bad"] == shas[5] and data["commits"] == 8
    assert "the breaking change" in data["first_bad_subject"]
    steps = data["steps"]
    assert len(steps) <= 4 and data["builds"] == len(steps)
    assert any(s["says"] == "skip" for s in steps)  # a build-failing commit was met
    assert f"first bad commit: {shas[5]}" in out.getvalue()
    md = (folder / "bisect.md").read_text()
    assert f"**First bad commit: {shas[5][:7]}" in md and "| skip |" in md
    assert (folder / "git-bisect-log.txt").read_text().count("git bisect") >= 3
    # The user's checkout is as it was: same HEAD, no bisection going on there.
    assert sh("git", "rev-parse", "HEAD", cwd=repo) == head_before
    assert sh("git", "status", "--porcelain", cwd=repo) == ""
    assert subprocess.run(["git", "bisect", "log"], cwd=repo, capture_output=True).returncode != 0
    # The worktree is kept, detached and out of bisect mode, for the next bisection.
    assert (tmp_path / "wt" / ".git").is_file()
    code = bisect.run_bisect(lab, request(tmp_path, repo, shas[0], shas[8]), Progress(out))
    assert code == 0


def test_only_skips_left_names_the_candidates(
    tmp_path: Path, lab: LabConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "linux"
    shas = make_repo(repo)
    fake_steps(monkeypatch, tmp_path)
    # Between c4 (good) and c6 (bad... but unbuildable): c5 and c6 could both be it.
    out = io.StringIO()
    code = bisect.run_bisect(lab, request(tmp_path, repo, shas[2], shas[6]), Progress(out))
    data = json.loads(next((tmp_path / "results").glob("bisect-*/bisect.json")).read_text())
    if data["first_bad"] is None:
        assert code == 2 and set(data["candidates"]) <= {shas[5], shas[6]}
    else:  # git tested c5 first: bad, and c4 is good, so it knows
        assert code == 0 and data["first_bad"] == shas[5]


def test_bad_input_is_refused_before_any_work(tmp_path: Path, lab: LabConfig) -> None:
    repo = tmp_path / "linux"
    shas = make_repo(repo)
    with pytest.raises(UserError, match="not a commit"):
        bisect.run_bisect(lab, request(tmp_path, repo, "nope", "main"))
    with pytest.raises(UserError, match="not an ancestor"):
        bisect.run_bisect(lab, request(tmp_path, repo, shas[5], shas[2]))
    with pytest.raises(UserError, match="same commit"):
        bisect.run_bisect(lab, request(tmp_path, repo, "main", shas[8]))
    with pytest.raises(UserError, match="not a git checkout"):
        plain = tmp_path / "plain"
        plain.mkdir()
        bisect.run_bisect(lab, request(tmp_path, plain, "a", "b"))
    with pytest.raises(UserError, match="Debian source package"):
        bisect.run_bisect(lab, request(tmp_path, Path("mainline"), "a", "b"))
    bad_test = request(tmp_path, repo, shas[0], "main")
    with pytest.raises(UserError, match="runs as a whole"):
        bisect.run_bisect(
            lab,
            bisect.BisectRequest(
                **{**bad_test.__dict__, "test": selection.parse("conversions-driver:x")}
            ),
        )
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "file").write_text("mine")
    with pytest.raises(UserError, match="exists and is not a worktree"):
        bisect.run_bisect(
            lab, bisect.BisectRequest(**{**bad_test.__dict__, "worktree": tmp_path / "elsewhere"})
        )
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    ("code", "build", "reason", "says"),
    [
        (0, "ok", "", "good"),
        (1, "ok", "", "bad"),
        (2, "ok", "the VM went away", "skip"),
        (2, "failed", "make failed", "skip"),
        (3, "failed", "config not verified", "skip"),
        (1, "failed", "", "skip"),
        (2, "ok", "interrupted (Ctrl-C or SIGTERM)", "stop"),
    ],
)
def test_judge(code: int, build: str, reason: str, says: str) -> None:
    assert bisect_step.judge(code, build, reason) == says


def test_step_runs_the_one_test_and_records_itself(
    tmp_path: Path, lab: LabConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "linux"
    make_repo(repo)
    seen: list[tuple[LabConfig, runner.RunRequest]] = []

    def fake_run(lab_: LabConfig, req: runner.RunRequest, p: Progress) -> int:
        seen.append((lab_, req))
        assert req.run_id is not None
        rec = Recorder(req.results_root, req.cell, run_id=req.run_id)
        with rec.stage("build"):
            pass
        rec.add(TestResult("gmem-ioctl", "test_file_size", Outcome.FAIL))
        return rec.finish(True).exit_code

    monkeypatch.setattr(runner, "run", fake_run)
    folder = tmp_path / "results" / "bisect-x"
    folder.mkdir(parents=True)
    argv = ["bisect", "--step", "--kernel", str(repo), "--test", str(SEL)]
    argv += ["--results", str(folder), "--history", str(tmp_path / "results")]
    assert cli.main(argv) == bisect_step.EXIT_BAD
    ((narrowed, req),) = seen
    assert set(narrowed.suites) == {"gmem-ioctl"}
    assert narrowed.suites["gmem-ioctl"].tests == ["test_guest_memfd.py::test_file_size"]
    assert req.kernel == str(repo) and req.suites == ("gmem-ioctl",)
    assert req.history_root == tmp_path / "results" and req.results_root == folder
    (step,) = bisect_step.load_steps(folder)
    assert step.says == "bad" and step.build == "ok" and step.subject == "change 8"
    assert step.run_id == f"step-01-{step.commit[:12]}"


def test_step_without_a_summary_is_a_skip(
    tmp_path: Path, lab: LabConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "linux"
    make_repo(repo)
    folder = tmp_path / "b"
    folder.mkdir()
    code = bisect_step.step(lab, SEL, repo, "lab", folder, tmp_path, Progress(io.StringIO()),
                            lambda lab_, req, p: 2)  # fmt: skip
    assert code == bisect_step.EXIT_SKIP


def test_step_argv_calls_this_lab(tmp_path: Path) -> None:
    req = bisect.BisectRequest(
        "k", "g", "b", SEL, "lab", tmp_path / "results", lab_file=Path("lab.yaml")
    )
    argv = bisect.step_argv(req, tmp_path / "wt", tmp_path / "f")
    assert argv[1:3] == ["-m", "harness.cli"] and argv[3] == "--lab"
    assert Path(argv[4]).is_absolute()
    assert argv[argv.index("--test") + 1] == "gmem-ioctl:test_guest_memfd.py::test_file_size"
    assert argv[argv.index("--history") + 1] == str(tmp_path / "results")


def test_cli_needs_good_and_bad(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bisect", "--kernel", str(tmp_path), "--test", "gmem-ioctl", "--good", "x"]
    assert cli.main([*argv, "--results", str(tmp_path / "r")]) == 3
    assert "needs --good and --bad" in capsys.readouterr().err
