"""SourceTree: what every source kind hands the build (a kernel tree and its identity)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.errors import UserError


@dataclass(frozen=True)
class SourceTree:
    name: str
    kind: str  # a KernelSource kind: "git" | "path" | "deb" | "mbox"
    path: Path
    commit: str
    describe: str
    dirty: bool = False
    diff_sha256: str | None = None
    # Where it came from: the git URL and ref, the local path, or package=version.
    origin: str = ""
    # git: the series' base commit from lab.yaml (for A/B runs against it), if given;
    # mbox: the identity of the tree the series was applied onto.
    base: str | None = None
    # mbox: the series' sha256 and one record per patch (index, subject, message_id,
    # status, sha256, ...), as the manifest and the report list them.
    mbox_sha256: str | None = None
    patches: tuple[dict[str, object], ...] = ()
    # Where this tree's build folders go; None: $LAB_CACHE/builds. An mbox tree builds
    # beside its worktree (harness/patchset.py: that is what keeps ccache hitting).
    build_root: Path | None = None

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
        A series from mail is its base's identity plus the mbox's sha256.
        """
        if self.kind == "mbox":
            return f"mbox:{self.base}+{self.mbox_sha256}"
        return f"path:{self.path}" if self.kind == "path" else self.identity


def check_kernel_tree(path: Path, origin: str) -> None:
    """A UserError unless path is the top of a Linux tree (every kind checks its tree)."""
    if not (path / "Makefile").is_file() or not (path / "scripts" / "kconfig").is_dir():
        raise UserError(
            f"{path} ({origin}) is not a kernel source tree (no Makefile or scripts/kconfig)",
            "pass the top folder of a Linux checkout",
        )
