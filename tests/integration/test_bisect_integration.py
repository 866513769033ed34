"""lab bisect for real: a git repository of the offline 7.3 tree with 8 commits on top,
one of them the planted regression and two that do not build (twin_trees.bisect_repo).
Each step builds the worktree incrementally (twin_trees explains how it stays warm),
boots it and runs the one test that catches the change.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import pytest

from tests.integration import twin_trees

pytestmark = [pytest.mark.slow, pytest.mark.scenario]


def test_bisect_finds_the_breaking_commit_in_at_most_4_builds() -> None:
    repo, shas = twin_trees.bisect_repo()
    assert len(shas) == 9
    tree = twin_trees.bisect_worktree()
    head = twin_trees._git(repo, "rev-parse", "HEAD")
    tmp = Path(tempfile.mkdtemp(prefix="gl-bi-", dir="/tmp"))
    results = tmp / "results"
    start = time.monotonic()
    done = twin_trees.lab(
        "bisect", "--kernel", str(repo), "--good", "fixture-good", "--bad", "fixture-bad",
        "--test", twin_trees.BISECT_TEST, "--worktree", str(tree), "--results", str(results),
    )  # fmt: skip
    wall = time.monotonic() - start
    print(done.stderr[-6000:])
    print(f"lab bisect: exit {done.returncode} in {wall:.0f}s")
    assert done.returncode == 0, done.stderr[-6000:]
    (folder,) = results.glob("bisect-*")
    data = json.loads((folder / "bisect.json").read_text())
    planted = shas[5]
    assert data["first_bad"] == planted, data
    assert "reject a nonzero reserved[0]" in data["first_bad_subject"]
    assert data["builds"] <= 4, data["steps"]
    # A commit that does not build was met and skipped, not called bad.
    unbuildable = {shas[3], shas[6]}
    for step in data["steps"]:
        if step["commit"] in unbuildable:
            assert step["build"] == "failed" and step["says"] == "skip"
    # Every step's run is in the history.
    listed = twin_trees.lab("history", "list", "--results", str(results), "--last", "20")
    assert listed.returncode == 0
    for step in data["steps"]:
        assert step["run_id"] in listed.stdout
    # The repository's own checkout is untouched.
    assert twin_trees._git(repo, "rev-parse", "HEAD") == head
    assert twin_trees._git(repo, "status", "--porcelain", "--untracked-files=no") == ""
    (tmp / "bisect.stderr").write_text(done.stderr)
    twin_trees.clean_up(tmp)
