"""The copy of the kernel tree that mutants are written into.

Never the source stage's own tree: git worktrees and unpacked packages under the cache
are keyed by their content and shared by every build and run, and a developer's
checkout is theirs. One copy per source identity, made once with rsync (without .git:
the copy is built as a plain path tree), reused by every later mutation run of the same
source so its build folder stays warm (one object and a relink per mutant).

Files in the copy are only ever replaced by rename, and restored with a fresh mtime, so
kbuild always sees a restored file as newer than the mutant's object.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from harness import names
from harness.cachelock import locked
from harness.errors import InfraError
from harness.paths import cache_dir
from harness.proc import run_logged
from harness.source import SourceTree

COPIED_SUFFIX = ".copied"


def copy_root() -> Path:
    return cache_dir("mutate-trees")


def work_copy(src: SourceTree) -> Path:
    """The copy of src to mutate, made on first use (locked against a parallel maker)."""
    root = copy_root()
    key = names.hashed_slug(f"{src.name}-{src.identity}", max_len=40)
    dest = root / key
    mark = root / f"{key}{COPIED_SUFFIX}"
    with locked(root / f"{key}.lock", f"mutation copy {key}"):
        if mark.is_file() and dest.is_dir():
            return dest
        staging = root / f"{key}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(dest, ignore_errors=True)
        run_logged(
            ["rsync", "-a", "--exclude=/.git", f"{src.path}/", f"{staging}/"],
            log=root / f"{key}.log",
            label=f"mutate: copy {src.describe} for mutation",
        )
        if not (staging / "Makefile").is_file():
            raise InfraError(f"copying {src.path} left no Makefile in {staging}")
        staging.rename(dest)
        mark.write_text(f"{src.path}\n{src.identity}\n")
    return dest


def lock_path(tree: Path) -> Path:
    """The lock a mutation run holds on its copy: two runs must not mutate one tree."""
    return tree.with_name(tree.name + ".mutating.lock")
