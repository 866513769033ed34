"""Source stage: turn a lab.yaml kernel name (or a path) into a tree to build from.

Three kinds (DESIGN.md, "source"):
  git   a bare mirror under the cache, fetched only for the ref; a detached worktree
        per commit, so two refs never disturb each other.
  path  a developer's checkout, used in place; a dirty tree is recorded with a hash of
        its diff so two builds of "the same commit" with different edits never share
        a cache key.
  deb   a Debian source package, downloaded through a private apt configuration under
        the cache (no root, no change to the system's sources) and unpacked once.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness import aptsources, names
from harness.cachelock import locked
from harness.config import GIT_SCHEMES, DebSource, GitSource, LabConfig
from harness.errors import InfraError, UserError
from harness.paths import cache_dir
from harness.proc import require_tools, run_logged

# A GitHub that is not reachable should fail in seconds, not after TCP's retries.
GIT_CONNECT_TIMEOUT_S = 20
UNPACKED_MARK = ".gmemlab-unpacked"


@dataclass(frozen=True)
class SourceTree:
    name: str
    kind: str  # "git" | "path" | "deb"
    path: Path
    commit: str
    describe: str
    dirty: bool = False
    diff_sha256: str | None = None
    # Where it came from: the git URL and ref, the local path, or package=version.
    origin: str = ""
    # git: the series' base commit from lab.yaml (for A/B runs against it), if given.
    base: str | None = None

    @property
    def identity(self) -> str:
        """What the tree's content is: the commit plus, for a dirty tree, its diff."""
        return f"{self.commit}+{self.diff_sha256}" if self.dirty else self.commit

    @property
    def build_key(self) -> str:
        """What the build folder is keyed on.

        git worktrees and unpacked packages never change, so their content identity.
        A developer's checkout changes with every edit: keying on its content would
        start a new folder (a full rebuild) per edit, so it keys on its location and
        builds incrementally; the manifest still records commit, dirty and diff hash.
        """
        return f"path:{self.path}" if self.kind == "path" else self.identity


def prepare_source(lab: LabConfig, kernel: str) -> SourceTree:
    """Resolve `kernel` (a lab.yaml kernel name or a filesystem path) to a SourceTree."""
    spec = lab.kernels.get(kernel)
    if spec is None:
        candidate = Path(kernel).expanduser()
        if "/" in kernel or candidate.exists():
            return from_path(candidate.name or kernel, candidate)
        known = ", ".join(sorted(lab.kernels)) or "none"
        raise UserError(
            f"unknown kernel {kernel!r}: not in lab.yaml (known: {known}) and not a path",
            "pass a kernel name from lab.yaml or the path of a kernel tree",
        )
    if spec.git is not None or spec.deb is not None:
        # One fetch/unpack per kernel at a time (`lab run` and `lab build` may overlap).
        safe = names.slug(kernel)
        with locked(cache_dir("sources") / f"{safe}.lock", f"source {kernel}"):
            if spec.git is not None:
                return from_git(kernel, spec.git)
            assert spec.deb is not None
            return from_deb(kernel, spec.deb)
    assert spec.path is not None
    path = spec.path if spec.path.is_absolute() else lab.root / spec.path
    return from_path(kernel, path)


def _check_kernel_tree(path: Path, origin: str) -> None:
    if not (path / "Makefile").is_file() or not (path / "scripts" / "kconfig").is_dir():
        raise UserError(
            f"{path} ({origin}) is not a kernel source tree (no Makefile or scripts/kconfig)",
            "pass the top folder of a Linux checkout",
        )


# --- git -----------------------------------------------------------------------------
# lab.yaml's URL and ref are checked at load (config.GitUrl, config.GitRef); git is also
# told, on every call, which transports it may use and where its options end, so a
# value that slipped past the check is still only ever a URL or a ref.


def git_env() -> dict[str, str]:
    return {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",
        # The lab's URL schemes (local paths are "file"); not ext::, fd:: or plain http,
        # whatever the user's git config allows, and for redirects and submodules too.
        "GIT_ALLOW_PROTOCOL": ":".join(GIT_SCHEMES),
    }


def _git(*args: str, cwd: Path | None = None, timeout: float | None = None) -> str:
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


def _offline_hint(url: str) -> str:
    return (
        f"check the network path to {url}; offline, use Debian's baseline with "
        "`--kernel mainline` (lab build/run; make lab-test KERNEL=mainline) or a local "
        "tree with `--kernel /path/to/linux`"
    )


def mirror_dir(url: str) -> Path:
    """One bare mirror per URL, named so a person can tell which is which."""
    return (
        cache_dir("git") / f"{names.hashed_slug(url.split('://')[-1], max_len=60, digits=12)}.git"
    )


def _probe_remote(url: str, ref: str) -> None:
    """ls-remote with a hard deadline: an unreachable URL fails in seconds."""
    try:
        listed = _git(
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
            f"git source {url} did not answer within {GIT_CONNECT_TIMEOUT_S}s",
            _offline_hint(url),
        ) from None
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or "").strip().splitlines()
        raise UserError(
            f"git source {url} is unreachable: {detail[-1] if detail else 'git ls-remote failed'}",
            _offline_hint(url),
        ) from None
    # A commit id is not listed by ls-remote; the fetch will tell whether it exists.
    if not listed and not re.fullmatch(r"[0-9a-f]{7,40}", ref):
        raise UserError(
            f"git source {url} has no branch or tag {ref!r}",
            "fix kernels.*.git.ref in lab.yaml",
        )


def from_git(name: str, spec: GitSource) -> SourceTree:
    require_tools("git")
    _probe_remote(spec.url, spec.ref)
    mirror = mirror_dir(spec.url)
    if not (mirror / "HEAD").exists():
        _git("init", "--bare", "-q", str(mirror))
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
    commit = _git(
        "-C", str(mirror), "rev-parse", "--verify", "--end-of-options",
        f"refs/gmemlab/{name}^{{commit}}",
    )  # fmt: skip
    worktree = cache_dir("worktrees") / commit
    if not (worktree / ".git").exists():
        shutil.rmtree(worktree, ignore_errors=True)
        _git("-C", str(mirror), "worktree", "prune")
        _git("-C", str(mirror), "worktree", "add", "--detach", "-f", "--", str(worktree), commit)
    _check_kernel_tree(worktree, spec.url)
    return SourceTree(
        name=name,
        kind="git",
        path=worktree,
        commit=commit,
        describe=_describe(worktree),
        origin=f"{spec.url} {spec.ref}",
        base=spec.base,
    )


def _describe(tree: Path) -> str:
    try:
        return _git("-C", str(tree), "describe", "--tags", "--always", "--abbrev=12")
    except subprocess.CalledProcessError:
        return _git("-C", str(tree), "rev-parse", "--short=12", "HEAD")


# --- path ----------------------------------------------------------------------------


def from_path(name: str, path: Path) -> SourceTree:
    path = path.resolve()
    if not path.is_dir():
        raise UserError(f"kernel path {path} does not exist", "pass an existing kernel tree")
    _check_kernel_tree(path, "local path")
    if not (path / ".git").exists() or shutil.which("git") is None:
        # Not a git checkout (e.g. an unpacked tarball): identify it by its content.
        digest = tree_hash(path)
        return SourceTree(name, "path", path, f"tree-{digest[:40]}", path.name, origin=str(path))
    commit = _git("-C", str(path), "rev-parse", "HEAD")
    # A diff against HEAD plus untracked files' names and contents: any edit changes it.
    diff = subprocess.run(
        ["git", "-C", str(path), "diff", "HEAD", "--binary"], capture_output=True, check=True
    ).stdout
    untracked = _git("-C", str(path), "ls-files", "--others", "--exclude-standard", "-z")
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
    describe = _describe(path) + ("-dirty" if dirty else "")
    return SourceTree(name, "path", path, commit, describe, dirty, diff_sha, str(path))


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


# --- deb -----------------------------------------------------------------------------


def apt_options(base: Path) -> list[str]:
    """apt -o options that keep every list, cache and source under `base`."""
    etc = base / "etc"
    return [
        "-o",
        f"Dir::Etc::sourcelist={etc / 'sources.list'}",
        "-o",
        "Dir::Etc::sourceparts=-",
        # System pins must not hide or prefer a version of our package.
        "-o",
        f"Dir::Etc::preferences={etc / 'preferences'}",
        "-o",
        f"Dir::Etc::preferencesparts={etc / 'preferences.d'}",
        "-o",
        f"Dir::State::Lists={base / 'lists'}",
        "-o",
        f"Dir::Cache={base / 'cache'}",
        "-o",
        "APT::Get::List-Cleanup=0",
    ]


def sources_line(spec: DebSource, mirror: str) -> str:
    """The private sources.list's one line.

    Every field was held to a narrow pattern at load (config.DebWord, Mirror, AbsPath):
    none can hold a space or a bracket, so none can add a field or an [option]. Checked
    again here because the mirror may come from the host's apt sources instead.
    """
    if not aptsources.MIRROR.fullmatch(mirror):
        raise UserError(
            f"mirror {mirror!r} is not a plain http(s):// or file:// URL",
            "set kernels.<name>.deb.mirror in lab.yaml to your Debian mirror's URL",
        )
    return f"deb [signed-by={spec.keyring}] {mirror} {spec.suite} main\n"


def _write_apt_config(base: Path, spec: DebSource, mirror: str) -> None:
    for sub in ("etc/preferences.d", "lists/partial", "cache/archives/partial"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    (base / "etc" / "preferences").touch()
    (base / "etc" / "sources.list").write_text(sources_line(spec, mirror))


def from_deb(name: str, spec: DebSource) -> SourceTree:
    require_tools("apt-get", "dpkg-deb", "tar", "xz")
    if not Path(spec.keyring).is_file():
        raise UserError(
            f"apt keyring {spec.keyring} not found (needed to verify {spec.suite})",
            "install the Debian package debian-archive-keyring",
        )
    # lab.yaml's mirror, else the one this machine's apt sources use (no archive host
    # is named in the lab: a machine behind a local mirror keeps using it).
    mirror = spec.mirror or aptsources.host_mirror()
    base = cache_dir("sources", "deb", spec.suite)
    _write_apt_config(base, spec, mirror)
    opts = apt_options(base)
    log = base / "apt.log"
    updated = run_logged(
        ["apt-get", *opts, "-q", "update"],
        log=log,
        label=f"source {name}: apt-get update",
        check=False,
    )
    if updated.returncode != 0:
        # Offline after a first fetch: the lists from last time still name a version
        # whose package (and unpacked tree) is in the cache.
        if not any((base / "lists").glob("*_Packages*")):
            raise UserError(
                f"apt-get update for {mirror} {spec.suite} failed (log: {log})",
                "check the network path to the Debian mirror, or build a local tree "
                "with `lab build --kernel /path/to/linux`",
            )
        print(f"  warning: apt-get update failed; using the package lists from last time ({log})")
    version = _candidate_version(opts, spec.package)
    if version is None:
        raise UserError(
            f"package {spec.package} not found in {mirror} {spec.suite}",
            "check kernels.*.deb.package and suite in lab.yaml",
        )
    safe_version = version.replace(":", "%3a")
    downloads = cache_dir("sources", "deb", "debs")
    deb = downloads / f"{spec.package}_{safe_version}_all.deb"
    if not deb.is_file():
        run_logged(
            ["apt-get", *opts, "-q", "download", f"{spec.package}={version}"],
            log=log,
            label=f"source {name}: apt-get download {spec.package}",
            cwd=downloads,
        )
    if not deb.is_file():
        found = sorted(downloads.glob(f"{spec.package}_*.deb"))
        raise InfraError(f"apt-get download left no {deb.name} (found {found})", f"see {log}")
    # Versions hold "~" and "+": keep them out of the path make and the compiler see.
    folder = names.slug(f"{spec.package}_{version}", max_len=120)
    tree = _unpack_deb(deb, cache_dir("sources", "deb", "trees") / folder)
    _check_kernel_tree(tree, f"{spec.package} {version}")
    return SourceTree(
        name=name,
        kind="deb",
        path=tree,
        commit=f"deb-{spec.package}_{version}",
        describe=f"{spec.package} {version}",
        origin=f"{mirror} {spec.suite} {spec.package}={version} sha256:{sha256_file(deb)}",
    )


def _candidate_version(opts: list[str], package: str) -> str | None:
    out = subprocess.run(
        ["apt-cache", *opts, "policy", package], capture_output=True, text=True, check=False
    ).stdout
    m = re.search(r"Candidate:\s*(\S+)", out)
    return m.group(1) if m and m.group(1) != "(none)" else None


def _unpack_deb(deb: Path, dest: Path) -> Path:
    """Unpack the package and its /usr/src tarball once; a marker says it finished."""
    if (dest / UNPACKED_MARK).is_file():
        return Path((dest / UNPACKED_MARK).read_text().strip())
    shutil.rmtree(dest, ignore_errors=True)
    staging = dest.with_name(dest.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    log = dest.with_name(dest.name + ".log")
    run_logged(["dpkg-deb", "-x", deb, staging / "pkg"], log=log, label="source: dpkg-deb -x")
    tarballs = sorted((staging / "pkg" / "usr" / "src").glob("linux-source-*.tar.*"))
    if not tarballs:
        raise InfraError(f"{deb.name} holds no /usr/src/linux-source-*.tar.*", f"see {log}")
    run_logged(
        ["tar", "-xf", tarballs[0], "-C", staging],
        log=log,
        label=f"source: unpack {tarballs[0].name}",
    )
    shutil.rmtree(staging / "pkg")
    tops = [p for p in staging.iterdir() if p.is_dir()]
    if len(tops) != 1:
        raise InfraError(f"{tarballs[0].name} unpacked to {len(tops)} folders, expected 1")
    staging.rename(dest)
    tree = dest / tops[0].name
    (dest / UNPACKED_MARK).write_text(f"{tree}\n")
    return tree


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
