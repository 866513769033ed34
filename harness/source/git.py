"""Source kind `git`: a bare mirror under the cache, fetched only for the ref, and a
detached worktree per commit, so two refs never disturb each other.

lab.yaml's URL and ref are checked at load (config.checks.GitUrl, GitRef); git is also
told, on every call, which transports it may use and where its options end, so a value
that slipped past the check is still only ever a URL or a ref. The git helpers here
(run_git, describe) serve the `path` kind's checkouts too.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from harness import names
from harness.config import GIT_SCHEMES, GitSource, KernelSource, LabConfig
from harness.errors import UserError
from harness.paths import cache_dir
from harness.proc import require_tools, run_logged
from harness.source.tree import SourceTree, check_kernel_tree

# A GitHub that is not reachable should fail in seconds, not after TCP's retries.
GIT_CONNECT_TIMEOUT_S = 20


def git_env() -> dict[str, str]:
    return {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",
        # The lab's URL schemes (local paths are "file"); not ext::, fd:: or plain http,
        # whatever the user's git config allows, and for redirects and submodules too.
        "GIT_ALLOW_PROTOCOL": ":".join(GIT_SCHEMES),
    }


def run_git(*args: str, cwd: Path | None = None, timeout: float | None = None) -> str:
    """git's stdout, stripped; CalledProcessError (with stderr) when it fails."""
    env = {**git_env(), "LC_ALL": "C"}
    done = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, done.args, done.stdout, done.stderr)
    return done.stdout.strip()


def describe(tree: Path) -> str:
    try:
        return run_git("-C", str(tree), "describe", "--tags", "--always", "--abbrev=12")
    except subprocess.CalledProcessError:
        return run_git("-C", str(tree), "rev-parse", "--short=12", "HEAD")


def _offline_hint(name: str, url: str, default: bool) -> str:
    # Every command that takes --kernel says this, so `lab host-vm up NAME` (which a
    # person rarely gives --kernel) tells where the kernel came from, like `lab run`.
    chosen = f"{name} is lab.yaml's defaults.kernel, used without --kernel; " if default else ""
    return (
        f"check the network path to {url}; {chosen}offline, pass `--kernel mainline` "
        "(Debian's baseline; make lab-test KERNEL=mainline) or a local tree's path "
        "`--kernel /path/to/linux`"
    )


def mirror_dir(url: str) -> Path:
    """One bare mirror per URL, named so a person can tell which is which."""
    return (
        cache_dir("git") / f"{names.hashed_slug(url.split('://')[-1], max_len=60, digits=12)}.git"
    )


def _probe_remote(name: str, url: str, ref: str, default: bool = False) -> None:
    """ls-remote with a hard deadline: an unreachable URL fails in seconds, naming the
    lab.yaml kernel (`default`: it was chosen by defaults.kernel, not by --kernel)."""
    try:
        listed = run_git(
            "-c",
            "http.lowSpeedLimit=1000",
            "-c",
            f"http.lowSpeedTime={GIT_CONNECT_TIMEOUT_S}",
            "ls-remote",
            "--",
            url,
            ref,
            timeout=GIT_CONNECT_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise UserError(
            f"kernel {name!r}: git source {url} did not answer within {GIT_CONNECT_TIMEOUT_S}s",
            _offline_hint(name, url, default),
        ) from None
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or "").strip().splitlines()
        why = detail[-1] if detail else "git ls-remote failed"
        raise UserError(
            f"kernel {name!r}: git source {url} is unreachable: {why}",
            _offline_hint(name, url, default),
        ) from None
    # A commit id is not listed by ls-remote; the fetch will tell whether it exists.
    if not listed and not re.fullmatch(r"[0-9a-f]{7,40}", ref):
        raise UserError(
            f"kernel {name!r}: git source {url} has no branch or tag {ref!r}",
            f"fix kernels.{name}.git.ref in lab.yaml",
        )


def from_git(name: str, spec: GitSource, default: bool = False) -> SourceTree:
    require_tools("git")
    _probe_remote(name, spec.url, spec.ref, default)
    mirror = mirror_dir(spec.url)
    if not (mirror / "HEAD").exists():
        run_git("init", "--bare", "-q", str(mirror))
    log = mirror.with_suffix(".log")
    # Fetch only the ref (into a private namespace), not every branch of a big repo.
    run_logged(
        [
            "git",
            "-C",
            mirror,
            "fetch",
            # Only the commit the ref names: the build needs one tree, not the history
            # (linux-cc's full history is gigabytes). Tags pointing at it come along,
            # so describe names a tag when the ref is tagged, else the sha.
            "--depth=1",
            "--force",
            "--",
            spec.url,
            f"+{spec.ref}:refs/gmemlab/{name}",
        ],
        log=log,
        label=f"source {name}: git fetch {spec.ref}",
        env=git_env(),
    )
    commit = run_git(
        "-C", str(mirror), "rev-parse", "--verify", "--end-of-options",
        f"refs/gmemlab/{name}^{{commit}}",
    )  # fmt: skip
    worktree = cache_dir("worktrees") / commit
    if not (worktree / ".git").exists():
        shutil.rmtree(worktree, ignore_errors=True)
        run_git("-C", str(mirror), "worktree", "prune")
        run_git("-C", str(mirror), "worktree", "add", "--detach", "-f", "--", str(worktree), commit)
    check_kernel_tree(worktree, spec.url)
    return SourceTree(
        name=name,
        kind="git",
        path=worktree,
        commit=commit,
        describe=describe(worktree),
        origin=f"{spec.url} {spec.ref}",
        base=spec.base,
    )


def prepare(lab: LabConfig, name: str, spec: KernelSource) -> SourceTree:
    assert spec.git is not None
    return from_git(name, spec.git, default=name == lab.defaults.kernel)
