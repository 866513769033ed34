"""A series from mail applied onto a base tree, in a tree of its own under the cache.

The mbox source kind (`kernels: NAME: {mbox: {file: PATH, base: OTHER}}`) calls
`apply_series` with the base kernel's prepared tree:

1. The base as a git commit. A git base already is one (its mirror and commit). A deb
   or path base is committed once into a bare repository under
   `$LAB_CACHE/mbox/bases/<base identity>.git` (deb: every file, the package's
   .gitignore hides dotfiles; a git checkout given as a path: what its own git tracks
   or would add), with a fixed identity and date so the commit is the same every time.
2. A new worktree of that commit for this series, checked out at the base's own path
   *relative to the cache root* inside `$LAB_CACHE/mbox/<key>/`, where key = the base's
   identity + the mbox's sha256. Its builds go to `$LAB_CACHE/mbox/<key>/builds/`. So
   every path the compiler sees, made relative to its build folder (CCACHE_BASEDIR is
   the cache root), is the base's own: a series on a cached base compiles with ccache
   hits for every file the series does not touch. (A path base outside the cache has
   no such twin: its series builds cold once.)
3. `git am -3` of each patch (harness/mbox.apply), one status per patch: applied,
   failed (with the conflicting files and git's words) or not tried. The outcome is
   kept beside the worktree, so the same mbox on the same base is applied once.

A patch that does not apply is the series' problem, not the lab's: a TreeError (exit
1) naming the patch and its files, with git am's output as the evidence.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from harness import mbox, names
from harness.cachelock import locked
from harness.config import KernelSource, LabConfig, MboxSource
from harness.errors import Finding, InfraError, TreeError, UserError
from harness.paths import cache_dir, cache_root
from harness.source.tree import SourceTree

# A fixed identity and date: the same base tree always gives the same base commit.
_BASE_ENV = {
    "GIT_AUTHOR_NAME": "gmemlab",
    "GIT_AUTHOR_EMAIL": "gmemlab@localhost",
    "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
    "GIT_COMMITTER_NAME": "gmemlab",
    "GIT_COMMITTER_EMAIL": "gmemlab@localhost",
    "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
}
STATE = "series.json"
LORE = ("lore.kernel.org", 443)
NETWORK_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class PatchedTree:
    """The base with the series applied (or not: see statuses)."""

    path: Path  # the worktree
    build_root: Path  # where builds of this tree go (see the module's docstring)
    commit: str  # HEAD after the last applied patch
    base_commit: str
    mbox_sha256: str
    patches: tuple[dict[str, object], ...]  # per patch: index, subject, message_id, status...
    am_dir: Path  # each patch as a file and git am's output for it

    @property
    def applied(self) -> int:
        return sum(1 for p in self.patches if p["status"] == "applied")

    @property
    def failed(self) -> dict[str, object] | None:
        return next((p for p in self.patches if p["status"] == "failed"), None)


def _git(*args: str | Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        ["git", *[str(a) for a in args]],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", **(env or {})},
    )
    if done.returncode != 0:
        raise InfraError(
            f"git {' '.join(str(a) for a in args[:3])} failed: {done.stderr.strip()[-500:]}",
            "see the message above; the mbox cache is under $LAB_CACHE/mbox",
        )
    return done.stdout.strip()


def _key(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


# --- the base as a commit ---------------------------------------------------------------


def base_commit(base: SourceTree) -> tuple[Path, str]:
    """(git dir, commit) holding the base tree's content."""
    if base.kind == "git" and not base.dirty:
        common = _git("-C", base.path, "rev-parse", "--path-format=absolute", "--git-common-dir")
        return Path(common), base.commit
    repo = cache_dir("mbox", "bases") / f"{_key(base.kind, base.identity)}.git"
    with locked(repo.with_suffix(".lock"), f"mbox base {repo.name}"):
        done = repo / "gmemlab-base-commit"
        if done.is_file():
            return repo, done.read_text().strip()
        shutil.rmtree(repo, ignore_errors=True)
        _git("init", "-q", "--bare", repo)
        git = ["--git-dir", str(repo), "--work-tree", str(base.path)]
        if (base.path / ".git").exists():
            # A developer's checkout: what its own git tracks or would add.
            files = subprocess.run(
                ["git", "-C", str(base.path), "ls-files", "-z", "-c", "-o", "--exclude-standard"],
                capture_output=True,
                check=True,
            ).stdout
            listed = repo / "gmemlab-files"
            listed.write_bytes(files)
            _git(*git, "add", "-f", f"--pathspec-from-file={listed}", "--pathspec-file-nul")
        else:
            # An unpacked tarball: every file (its .gitignore hides tracked dotfiles).
            _git(*git, "add", "-A", "-f")
        _git(*git, "commit", "-q", "--no-verify", "-m", f"base: {base.describe}", env=_BASE_ENV)
        commit = _git("--git-dir", repo, "rev-parse", "HEAD")
        done.write_text(commit + "\n")
        return repo, commit


# --- the series -----------------------------------------------------------------------


def shadow_path(base_path: Path, root: Path) -> Path:
    """Where the series' worktree goes inside its folder: the base's place relative to
    the cache root (so relative paths from the build folder match), else `tree`."""
    resolved = base_path.resolve()
    cache = cache_root().resolve()
    if resolved.is_relative_to(cache):
        return root / resolved.relative_to(cache)
    return root / "tree"


def apply_series(base: SourceTree, mbox_file: Path) -> PatchedTree:
    """The base with the series applied, from the cache when done before. Raises a
    TreeError when a patch does not apply (after recording every patch's status)."""
    patches = mbox.parse(mbox_file)
    sha = mbox.sha256_file(mbox_file)
    root = cache_dir("mbox") / _key(base.kind, base.identity, sha)
    with locked(root.with_name(root.name + ".lock"), f"series {root.name}"):
        tree = _load(root)
        if tree is None:
            tree = _apply(base, patches, sha, root)
    if tree.failed is not None:
        raise series_error(tree, mbox_file)
    return tree


def _load(root: Path) -> PatchedTree | None:
    try:
        data = json.loads((root / STATE).read_text())
    except (OSError, ValueError):
        return None
    tree = PatchedTree(
        path=Path(data["path"]),
        build_root=root / "builds",
        commit=data["commit"],
        base_commit=data["base_commit"],
        mbox_sha256=data["mbox_sha256"],
        patches=tuple(data["patches"]),
        am_dir=root / "am",
    )
    # A failed series keeps no worktree; an applied one needs its worktree intact.
    if tree.failed is None and not (tree.path / ".git").exists():
        return None
    return tree


def _apply(base: SourceTree, patches: Sequence[mbox.Patch], sha: str, root: Path) -> PatchedTree:
    repo, commit = base_commit(base)
    work = shadow_path(base.path, root)
    if work.exists():
        shutil.rmtree(work)
    (root / STATE).unlink(missing_ok=True)
    _git("--git-dir", repo, "worktree", "prune")
    # Only the files the series touches first: a series that does not apply fails in
    # seconds, and the rest of the tree (a minute or two) is checked out only after.
    touched = _touched(patches)
    sparse = ["--no-checkout"] if touched else []
    _git("--git-dir", repo, "worktree", "add", "-q", "--detach", *sparse, "-f", "--", work, commit)
    if touched:
        _git("-C", work, "sparse-checkout", "set", "--no-cone", *[f"/{t}" for t in touched])
        _git("-C", work, "read-tree", "-mu", "HEAD")
    am_dir = root / "am"
    shutil.rmtree(am_dir, ignore_errors=True)
    statuses = mbox.apply(work, list(patches), am_dir)
    if touched and all(st.status == "applied" for st in statuses):
        print(f"  series: applied; checking out the rest of {base.describe} into {work}")
        _git("-C", work, "sparse-checkout", "disable")
    records = []
    for patch, status in zip(patches, statuses, strict=True):
        record = status.record()
        record["total"] = patch.total
        record["author"] = patch.author
        record["sha256"] = hashlib.sha256(patch.text).hexdigest()
        records.append(record)
    head = _git("-C", work, "rev-parse", "HEAD")
    tree = PatchedTree(work, root / "builds", head, commit, sha, tuple(records), am_dir)
    if tree.failed is not None:
        # Nothing to build: keep the statuses and git's output, not 1-2 GB of tree.
        _git("--git-dir", repo, "worktree", "remove", "--force", work)
    state = {
        "path": str(work),
        "commit": head,
        "base_commit": commit,
        "mbox_sha256": sha,
        "patches": records,
    }
    (root / STATE).write_text(json.dumps(state, indent=2) + "\n")
    return tree


_DIFF_PATHS = re.compile(r"^diff --git a/(\S+) b/(\S+)$", re.MULTILINE)


def _touched(patches: Sequence[mbox.Patch]) -> list[str] | None:
    """Every path the series' diffs name, or None when one is not a plain path (then
    the whole tree is checked out before applying, as git would need it)."""
    found: dict[str, None] = {}
    for patch in patches:
        # The body as git am will read it (quoted-printable and base64 decoded).
        msg = email.message_from_bytes(patch.text, policy=email.policy.default)
        body = msg.get_body(("plain",)) if isinstance(msg, EmailMessage) else None
        try:
            text = body.get_content() if body is not None else ""
        except (LookupError, ValueError):
            return None
        if not isinstance(text, str):
            return None
        if re.search(r'^diff --git "', text, re.MULTILINE):
            return None  # a quoted (unusual) path name
        for old, new in _DIFF_PATHS.findall(text):
            found.update(dict.fromkeys((old, new)))
    if not found or not all(re.fullmatch(r"[A-Za-z0-9._/+-]+", p) for p in found):
        return None
    return sorted(found)


def series_error(tree: PatchedTree, mbox_file: Path) -> TreeError:
    """The TreeError for a series with a patch that does not apply."""
    bad = tree.failed
    assert bad is not None
    index, subject = bad["index"], bad["subject"]
    conflicts = bad.get("conflicts")
    listed = ", ".join(str(c) for c in conflicts) if isinstance(conflicts, list) else ""
    files = f" (conflicts in {listed})" if listed else ""
    reason = f"patch {index}/{bad['total']} '{subject}' does not apply{files}: {bad['detail']}"
    log = tree.am_dir / f"{int(str(index)):04d}.am.log"
    excerpt = log.read_text(errors="replace").strip() if log.is_file() else str(bad["detail"])
    finding = Finding("series", f"patch {index}", reason, excerpt, log)
    return TreeError(
        f"{mbox_file.name}: {reason}",
        f"rebase the series onto the base, or pick another base; git am's output: {log}",
        findings=(finding,),
        patches=tree.patches,
    )


# --- a Message-ID instead of a file ---------------------------------------------------


def fetch(message_id: str) -> Path:
    """The series' mbox for a Message-ID, with `b4 am` (lore must be reachable)."""
    mid = message_id.strip().strip("<>")
    dest = cache_dir("mbox", "fetched")
    out = dest / f"{names.hashed_slug(mid, max_len=40)}.mbx"
    if out.is_file():
        return out
    how = "download the series' mbox where lore is reachable and pass --mbox FILE (or mbox.file)"
    try:
        socket.create_connection(LORE, timeout=NETWORK_TIMEOUT_S).close()
    except OSError as exc:
        raise UserError(f"cannot fetch <{mid}>: {LORE[0]} is unreachable ({exc})", how) from None
    if shutil.which("b4") is None:
        raise UserError(f"cannot fetch <{mid}>: b4 is not installed", f"pip install b4, or {how}")
    done = subprocess.run(
        ["b4", "am", "--no-cover", "-o", str(dest), "-n", out.stem, "--", mid],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 or not out.is_file():
        raise UserError(f"b4 am <{mid}> failed: {(done.stderr or done.stdout).strip()[-300:]}", how)
    return out


# --- `--mbox FILE --base NAME` on the command line --------------------------------------


def with_cli_series(lab: LabConfig, mbox_file: Path, base: str) -> tuple[LabConfig, str]:
    """lab with one more kernel, the mbox applied onto base, as if lab.yaml named it;
    and that kernel's name (<mbox name>-on-<base>, a safe name)."""
    if base not in lab.kernels:
        known = ", ".join(sorted(lab.kernels)) or "none"
        raise UserError(
            f"--base {base!r}: not a kernel in lab.yaml (known: {known})",
            "pass --base with a git, deb or path kernel's name",
        )
    if lab.kernels[base].mbox is not None:
        raise UserError(
            f"--base {base!r} is an mbox kernel itself", "pass a git, deb or path kernel"
        )
    if not mbox_file.is_file():
        raise UserError(f"--mbox {mbox_file}: no such file", "pass the series' mbox file")
    stem = names.slug(mbox_file.name.removesuffix(".mbx").removesuffix(".mbox"), max_len=30)
    name = f"{stem}-on-{base}"[:64]
    if not names.is_safe_name(name):
        name = names.hashed_slug(str(mbox_file.resolve()), max_len=20, digits=10)
    spec = KernelSource(mbox=MboxSource(file=mbox_file.resolve(), base=base))
    return lab.model_copy(update={"kernels": {**lab.kernels, name: spec}}), name
