"""Copies of the offline 7.3 tree that build incrementally from the shared ccache.

A copy of a tree somewhere else is a cold build for ccache: kbuild passes absolute
source paths, ccache turns those under CCACHE_BASEDIR (the cache root) into paths
relative to the object folder (builds/<name>/obj), and a copy's relative path differs,
so every compile misses. A twin avoids that without touching the lab: it lives under
an "alternative root" inside the cache at the same relative place as the original
(<alt>/sources/deb/trees/<pkg>/linux-source-7.3), and its build folder is a symbolic
link to <alt>/builds/<name>, so the relative paths kbuild's compiles see are exactly
the original's and ccache hits for every file the twin has not changed.

Test fixtures only: the lab itself never does this.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from harness import build, source
from harness.paths import REPO_ROOT, cache_root

LAB = [sys.executable, "-m", "harness.cli"]
FIXTURES = "histwire"
# Set to keep a scenario's results folder (its reports) instead of removing it.
KEEP_ENV = "GMEMLAB_KEEP_RESULTS"


def clean_up(tmp: Path) -> None:
    if os.environ.get(KEEP_ENV):
        print(f"kept {tmp} ({KEEP_ENV} is set)")
        return
    shutil.rmtree(tmp, ignore_errors=True)


def lab(
    *args: str, timeout: float = 5400, cwd: Path = REPO_ROOT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LAB, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def mainline_manifest() -> Path:
    """The mainline/lab build's manifest (an up-to-date build: seconds, never cold)."""
    link = cache_root() / "builds" / "latest-mainline-lab" / "manifest.json"
    if not link.is_file():
        raise RuntimeError(f"no mainline build in the cache ({link}): refusing a cold build")
    done = lab("build", "--kernel", "mainline")
    assert done.returncode == 0, done.stderr[-3000:]
    return Path(done.stdout.strip().splitlines()[-1])


def mainline_tree() -> Path:
    data = json.loads(mainline_manifest().read_text())
    return Path(data["source"]["path"])


def twin_path(label: str) -> Path:
    """Where the twin `label` of the mainline tree lives (whether made yet or not)."""
    original = mainline_tree()
    rel = original.relative_to(cache_root())
    return cache_root() / FIXTURES / label / rel


def make_twin(label: str, *, fresh: bool = False) -> Path:
    """A copy of the mainline tree (mtimes kept) at the twin's place; made once."""
    original = mainline_tree()
    dest = twin_path(label)
    if fresh and dest.exists():
        shutil.rmtree(dest)
    if not (dest / "Makefile").is_file():
        partial = dest.with_name(dest.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-a", str(original), str(partial)], check=True)
        partial.rename(dest)
    return dest


def alt_root(tree: Path) -> Path:
    """The alternative root a twin (or a tree placed like one) sits in."""
    rel = mainline_tree().relative_to(cache_root())
    root = tree
    for _ in rel.parts:
        root = root.parent
    return root


def config_hash(kernel: str, config: str = "lab") -> str:
    done = lab("build", "--kernel", kernel, "--config", config, "--config-only")
    assert done.returncode == 0, done.stderr[-3000:]
    cfg = Path(done.stdout.strip().splitlines()[-1])
    return hashlib.sha256(cfg.read_bytes()).hexdigest()


def link_build_dir(tree: Path, cfg_hash: str, kernel: str | None = None) -> Path:
    """Point the lab's build folder for the path kernel `tree` into the twin's root, so
    the object folder sits at the original's depth there (see the module docstring).

    `kernel` is the --kernel string the lab is given (default: the tree's path); the
    build folder's name derives from it.
    """
    kernel = kernel or str(tree)
    real = source.SourceTree(kernel, "path", tree.resolve(), "", "")
    wanted = build.build_dir_for(kernel, real, cfg_hash)
    target = alt_root(tree) / "builds" / wanted.name
    target.mkdir(parents=True, exist_ok=True)
    if wanted.is_symlink():
        if Path(os.readlink(wanted)) == target:
            return wanted
        wanted.unlink()
    elif wanted.exists():
        raise RuntimeError(f"{wanted} exists and is not the twin's link: remove it by hand")
    wanted.symlink_to(target)
    return wanted


# The planted regression: kvm_gmem_create starts rejecting a nonzero reserved[0],
# which 7.3 ignores (an ABI break test_create_guest_memfd_reserved_ignored catches).
GMEM_C = "virt/kvm/guest_memfd.c"
CLEAN_LINE = "\tif (flags & ~kvm_gmem_get_supported_flags(kvm))\n"
PLANTED_LINE = "\tif (flags & ~kvm_gmem_get_supported_flags(kvm) || args->reserved[0])\n"
PLANTED_TESTS = {
    "tests.guest.test_guest_memfd::test_create_guest_memfd_reserved_ignored[default-0]",
    "tests.guest.test_guest_memfd::test_create_guest_memfd_reserved_ignored[sw_protected-0]",
}


def plant(tree: Path) -> None:
    """The one-line change, written by rename (never through a shared inode)."""
    path = tree / GMEM_C
    text = path.read_text()
    if PLANTED_LINE in text:
        return
    assert text.count(CLEAN_LINE) == 1, f"{path}: the line to change is not there"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text.replace(CLEAN_LINE, PLANTED_LINE))
    tmp.replace(path)


def planted_tree() -> Path:
    """The mainline twin with the planted regression, its build folder linked."""
    tree = make_twin("planted")
    plant(tree)
    link_build_dir(tree, config_hash(str(tree)))
    return tree


# --- the bisection fixture: a git repository of the 7.3 tree, 8 commits on top -----

BISECT_TEST = "gmem-ioctl:test_guest_memfd.py::test_create_guest_memfd_reserved_ignored"
_BROKEN = '#error "gmemlab bisect fixture: this commit does not build"\n'
# (subject, edit): each edit takes the tree's text of a file and returns the new text.
_COMMITS: list[tuple[str, str, str]] = [
    ("Documentation: a note for the bisection fixture", "README", "append-note"),
    ("KVM: guest_memfd: say what kvm_gmem_create checks", GMEM_C, "comment"),
    ("KVM: guest_memfd: (fixture) a commit that does not build", GMEM_C, "break"),
    ("KVM: guest_memfd: (fixture) build again", GMEM_C, "unbreak"),
    ("KVM: guest_memfd: reject a nonzero reserved[0]", GMEM_C, "plant"),
    ("KVM: guest_memfd: (fixture) another commit that does not build", GMEM_C, "break"),
    ("KVM: guest_memfd: (fixture) build again", GMEM_C, "unbreak"),
    ("Documentation: another note", "README", "append-note"),
]


def _edit(text: str, how: str) -> str:
    if how == "append-note":
        return text + "\ngmemlab bisect fixture note.\n"
    if how == "comment":
        return text.replace(CLEAN_LINE, "\t/* Only flags this VM supports. */\n" + CLEAN_LINE, 1)
    if how == "break":
        return _BROKEN + text
    if how == "unbreak":
        return text.replace(_BROKEN, "", 1)
    if how == "plant":
        return text.replace(CLEAN_LINE, PLANTED_LINE, 1)
    raise ValueError(how)


def _git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "gmemlab fixture",
        "GIT_AUTHOR_EMAIL": "fixture@gmemlab",
        "GIT_COMMITTER_NAME": "gmemlab fixture",
        "GIT_COMMITTER_EMAIL": "fixture@gmemlab",
        "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
        "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
    }
    done = subprocess.run(
        ["git", "-C", str(repo), *args], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def bisect_repo() -> tuple[Path, list[str]]:
    """A git repository over a copy of the mainline tree: the tree as the root commit
    (every file, ignored ones too), then _COMMITS. Made once; returns the repository
    and its commits, root first."""
    repo = cache_root() / FIXTURES / "bisect-repo" / "linux-7.3"
    if not (repo / ".git" / "refs" / "tags" / "fixture-bad").exists():
        shutil.rmtree(repo, ignore_errors=True)
        repo.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-a", str(mainline_tree()), str(repo)], check=True)
        _git(repo, "init", "-q", "-b", "main")
        _git(repo, "add", "-A", "-f", ".")
        _git(repo, "commit", "-q", "-m", "Linux 7.3.4 (Debian linux-source-7.3)")
        _git(repo, "tag", "fixture-good")
        for subject, rel, how in _COMMITS:
            path = repo / rel
            path.write_text(_edit(path.read_text(), how))
            _git(repo, "commit", "-q", "-a", "-m", subject)
        _git(repo, "tag", "fixture-bad")
    root = _git(repo, "rev-parse", "fixture-good")
    return repo, [root, *_git(repo, "rev-list", "--reverse", "fixture-good..fixture-bad").split()]


def bisect_worktree() -> Path:
    """Where lab bisect --worktree puts the bisection's tree (a twin's place), its build
    folder linked so each step builds incrementally from the shared ccache."""
    tree = twin_path("bisect")
    tree.parent.mkdir(parents=True, exist_ok=True)
    cfg = json.loads(mainline_manifest().read_text())["config"]["hash"]
    link_build_dir(tree, cfg, kernel=str(tree.resolve()))
    return tree
