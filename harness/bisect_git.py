"""Git plumbing for `lab bisect`: the repository to bisect, its revisions and the worktree."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from harness import names
from harness.config import GIT_SCHEMES, GitSource, LabConfig
from harness.errors import UserError
from harness.paths import cache_dir


def git_env() -> dict[str, str]:
    return {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ALLOW_PROTOCOL": ":".join(GIT_SCHEMES),
        "LC_ALL": "C",
    }


def git_ok(*args: str) -> bool:
    return (
        subprocess.run(["git", *args], env=git_env(), capture_output=True, check=False).returncode
        == 0
    )


def git(*args: str, cwd: Path | None = None, check: bool = True) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=git_env(), capture_output=True, text=True, check=False
    )
    if check and done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise subprocess.CalledProcessError(
            done.returncode, ["git", *args], done.stdout, detail[-1] if detail else ""
        )
    return done.stdout.strip()


def repository(lab: LabConfig, kernel: str) -> Path:
    """The git repository to bisect in for --kernel (a checkout's top, or a bare repo)."""
    spec = lab.kernels.get(kernel)
    if spec is not None and spec.git is not None:
        return fetch_history(kernel, spec.git)
    if spec is not None and spec.deb is not None:
        raise UserError(
            f"kernel {kernel!r} is a Debian source package: it has no commits to bisect",
            "bisect a git checkout: --kernel /path/to/linux (or a lab.yaml git: kernel)",
        )
    if spec is not None and spec.path is not None:
        path = spec.path if spec.path.is_absolute() else lab.root / spec.path
    else:
        path = Path(kernel).expanduser()
    if not path.is_dir():
        raise UserError(
            f"unknown kernel {kernel!r}: not in lab.yaml and not a folder",
            "pass --kernel with a git checkout's path or a lab.yaml git:/path: kernel",
        )
    try:
        return Path(git("-C", str(path.resolve()), "rev-parse", "--show-toplevel"))
    except subprocess.CalledProcessError:
        raise UserError(
            f"{path} is not a git checkout: there are no commits to bisect",
            "git init it and commit, or pass a checkout (lab bisect needs history)",
        ) from None


def fetch_history(name: str, spec: GitSource) -> Path:
    """A bare repository under the cache with spec.ref and its whole history (the
    build's own mirror fetches one commit only)."""
    where = names.hashed_slug(spec.url.split("://")[-1], max_len=60, digits=12)
    repo = cache_dir("bisect", "repos") / f"{where}.git"
    if not (repo / "HEAD").exists():
        git("init", "--bare", "-q", str(repo))
    try:
        git("-C", str(repo), "fetch", "--force", "--quiet", "--", spec.url,
            f"+{spec.ref}:refs/heads/gmemlab-bisect/{names.slug(name)}")  # fmt: skip
    except subprocess.CalledProcessError as exc:
        raise UserError(
            f"cannot fetch {spec.url} {spec.ref} with its history: {exc.stderr}",
            "check the network path, or bisect a local checkout: --kernel /path/to/linux",
        ) from None
    return repo


def resolve(repo: Path, rev: str, what: str) -> str:
    try:
        return git("-C", str(repo), "rev-parse", "--verify", "--quiet", "--end-of-options",
                   f"{rev}^{{commit}}")  # fmt: skip
    except subprocess.CalledProcessError:
        raise UserError(
            f"--{what} {rev}: not a commit of {repo}",
            "pass a commit id, tag or branch of that repository (git log shows them)",
        ) from None


def default_worktree(repo: Path) -> Path:
    return cache_dir("bisect", "trees") / names.hashed_slug(str(repo), max_len=40, digits=12)


def _common_dir(path: Path) -> Path:
    common = Path(git("-C", str(path), "rev-parse", "--git-common-dir"))
    return (path / common).resolve() if not common.is_absolute() else common.resolve()


def worktree(repo: Path, path: Path, commit: str) -> Path:
    """A detached worktree of repo at commit: made, or an earlier bisection's reused."""
    if (path / ".git").exists():
        if _common_dir(path) != _common_dir(repo):
            raise UserError(
                f"{path} is a worktree of another repository",
                "pass another --worktree, or remove that folder",
            )
        git("-C", str(path), "bisect", "reset", "--quiet", check=False)
        git("-C", str(path), "checkout", "--quiet", "--detach", "--force", commit)
        return path
    if path.exists() and any(path.iterdir()):
        raise UserError(
            f"--worktree {path} exists and is not a worktree of {repo}",
            "name a new or empty folder (lab bisect makes the worktree itself)",
        )
    git("-C", str(repo), "worktree", "prune")
    git("-C", str(repo), "worktree", "add", "--quiet", "--detach", "--force", "--", str(path),
        commit)  # fmt: skip
    return path
