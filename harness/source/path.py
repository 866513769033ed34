"""Source kind `path`: a developer's checkout (or an unpacked tarball), used in place.

A dirty tree is recorded with a hash of its diff, so two builds of "the same commit"
with different edits never share a cache key. Also what a `--kernel /path/to/linux`
that names no lab.yaml kernel becomes. A tree whose real path kbuild cannot build from
(spaces, colons, commas) is built from a mirror of it under the cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

from harness import names
from harness.cachelock import locked
from harness.config import KernelSource, LabConfig
from harness.errors import UserError
from harness.paths import cache_dir
from harness.proc import run_logged
from harness.source.git import describe, run_git
from harness.source.tree import SourceTree, check_kernel_tree


def from_path(name: str, path: Path) -> SourceTree:
    path = path.resolve()
    if not path.is_dir():
        raise UserError(f"kernel path {path} does not exist", "pass an existing kernel tree")
    check_kernel_tree(path, "local path")
    tree = _identify(name, path)
    if KBUILD_SAFE.fullmatch(str(path)):
        return tree
    # kbuild refuses a source folder with spaces or colons (and make's functions split
    # on commas): build a mirror of the tree under the cache instead, kept in step with
    # rsync (mtimes kept, so builds stay incremental). Identity and origin stay the
    # tree's own; only where make reads it from moves.
    return dataclasses.replace(tree, path=mirror(path))


# A source path kbuild and make's functions take as it is.
KBUILD_SAFE = re.compile(r"[A-Za-z0-9._/+-]+")


def mirror(path: Path) -> Path:
    """A copy of the tree at path (without .git) under the cache, updated on every call."""
    root = cache_dir("sources", "mirrors")
    dest = root / names.hashed_slug(str(path), max_len=40)
    with locked(dest.with_name(dest.name + ".lock"), f"mirror of {path}"):
        run_logged(
            ["rsync", "-a", "--delete", "--exclude=/.git", f"{path}/", f"{dest}/"],
            log=dest.with_name(dest.name + ".log"),
            label=f"source: mirror {path.name} (its path has characters kbuild refuses)",
        )
    return dest


def _identify(name: str, path: Path) -> SourceTree:
    if not (path / ".git").exists() or shutil.which("git") is None:
        # Not a git checkout (e.g. an unpacked tarball): identify it by its content.
        digest = tree_hash(path)
        return SourceTree(name, "path", path, f"tree-{digest[:40]}", path.name, origin=str(path))
    commit = run_git("-C", str(path), "rev-parse", "HEAD")
    # A diff against HEAD plus untracked files' names and contents: any edit changes it.
    diff = subprocess.run(
        ["git", "-C", str(path), "diff", "HEAD", "--binary"], capture_output=True, check=True
    ).stdout
    untracked = run_git("-C", str(path), "ls-files", "--others", "--exclude-standard", "-z")
    dirty = bool(diff or untracked)
    diff_sha: str | None = None
    if dirty:
        h = hashlib.sha256(diff)
        for rel in sorted(filter(None, untracked.split("\0"))):
            h.update(rel.encode() + b"\0")
            f = path / rel
            if f.is_file():
                h.update(f.read_bytes())
        diff_sha = h.hexdigest()
    described = describe(path) + ("-dirty" if dirty else "")
    return SourceTree(name, "path", path, commit, described, dirty, diff_sha, str(path))


def tree_hash(path: Path) -> str:
    """Content hash of a non-git tree (names, sizes, mtimes: fast, changes on any edit)."""
    h = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            st = (Path(root) / f).lstat()
            rel = os.path.relpath(os.path.join(root, f), path)
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def prepare(lab: LabConfig, name: str, spec: KernelSource) -> SourceTree:
    """lab.yaml's path, relative to the lab file's folder unless absolute."""
    assert spec.path is not None
    path = spec.path if spec.path.is_absolute() else lab.root / spec.path
    return from_path(name, path)
