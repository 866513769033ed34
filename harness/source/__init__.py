"""Source stage: turn a lab.yaml kernel name (or a path) into a tree to build from.

One module per kind of lab.yaml `kernels:` entry (DESIGN.md, "source"); KINDS maps
each kind to the function that prepares it:
    git.py   a bare mirror under the cache, fetched only for the ref; a detached
             worktree per commit, so two refs never disturb each other
    path.py  a developer's checkout, used in place; a dirty tree is recorded with a
             hash of its diff so two builds of "the same commit" with different edits
             never share a cache key
    deb.py   a Debian source package, downloaded through a private apt configuration
             under the cache (no root, no change to the system's sources), unpacked once
    mbox.py  a series from mail applied onto another kernel (harness/patchset.py)
and beside them tree.py (SourceTree, the result every kind returns).

A new kind is a field on config.KernelSource (and its KINDS), a module here with
`prepare(lab, name, spec) -> SourceTree`, and one entry in KINDS below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness import names
from harness.cachelock import locked
from harness.config import KernelSource, LabConfig
from harness.errors import UserError
from harness.paths import cache_dir
from harness.source import deb, git, mbox, path
from harness.source.tree import SourceTree


@dataclass(frozen=True)
class Kind:
    """How a lab.yaml kernel of one kind becomes a tree."""

    prepare: Callable[[LabConfig, str, KernelSource], SourceTree]
    # Fetched or unpacked into the shared cache: one process per kernel at a time
    # (`lab run` and `lab build` may overlap). A path is used in place.
    cached: bool


# The kind registry: config.KernelSource's kind -> how to prepare it.
KINDS: dict[str, Kind] = {
    "git": Kind(git.prepare, cached=True),
    "path": Kind(path.prepare, cached=False),
    "deb": Kind(deb.prepare, cached=True),
    # Its base takes its own lock; this one guards the series' worktree and builds.
    "mbox": Kind(mbox.prepare, cached=True),
}


def prepare_source(lab: LabConfig, kernel: str) -> SourceTree:
    """Resolve `kernel` (a lab.yaml kernel name or a filesystem path) to a SourceTree."""
    spec = lab.kernels.get(kernel)
    if spec is None:
        candidate = Path(kernel).expanduser()
        if "/" in kernel or candidate.exists():
            return path.from_path(candidate.name or kernel, candidate)
        known = ", ".join(sorted(lab.kernels)) or "none"
        raise UserError(
            f"unknown kernel {kernel!r}: not in lab.yaml (known: {known}) and not a path",
            "pass a kernel name from lab.yaml or the path of a kernel tree",
        )
    kind = KINDS[spec.kind]
    if not kind.cached:
        return kind.prepare(lab, kernel, spec)
    safe = names.slug(kernel)
    with locked(cache_dir("sources") / f"{safe}.lock", f"source {kernel}"):
        return kind.prepare(lab, kernel, spec)


__all__ = ["KINDS", "Kind", "SourceTree", "prepare_source"]
