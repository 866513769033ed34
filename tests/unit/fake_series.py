"""A patch series as mail, made by real git against a copy of a tree (for mbox kernels)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "Alice Dev",
    "GIT_AUTHOR_EMAIL": "alice@example.org",
    "GIT_COMMITTER_NAME": "Alice Dev",
    "GIT_COMMITTER_EMAIL": "alice@example.org",
}

# (subject, {path in the tree: new content})
Edit = tuple[str, Mapping[str, str]]


def make_series(base: Path, edits: Sequence[Edit], out: Path, *, prefix: str = "PATCH v2") -> Path:
    """git format-patch of `edits` (one commit each) on top of base's files, as one mbox
    with a cover letter; base itself is left as it was."""
    work = out.with_suffix(".work")
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(base, work, ignore=shutil.ignore_patterns(".git"))

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(work), *args], env=ENV, capture_output=True, text=True, check=True
        ).stdout

    git("init", "-q")
    git("add", "-A", "-f")
    git("commit", "-qm", "base")
    for subject, files in edits:
        for rel, text in files.items():
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            (work / rel).write_text(text)
        git("add", "-A", "-f")
        git("commit", "-qm", subject)
    text = git("format-patch", "--stdout", "--cover-letter", "--thread",
               f"--subject-prefix={prefix}", f"HEAD~{len(edits)}..HEAD")  # fmt: skip
    shutil.rmtree(work)
    out.write_text(text)
    return out
