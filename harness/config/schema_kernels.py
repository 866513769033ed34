"""lab.yaml's `kernels:` (where a kernel tree comes from) and `configs:` (how it is
configured): the models the source and config stages read."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Self

from pydantic import Field, model_validator

from harness.config.checks import (
    AbsPath,
    ConfigTarget,
    DebWord,
    GitRef,
    GitUrl,
    Mirror,
    Model,
    RelPath,
)

# --- kernels: where a kernel tree comes from -------------------------------------------


class GitSource(Model):
    url: GitUrl
    ref: GitRef
    # The series' base commit, kept for A/B runs against the base tree.
    base: GitRef | None = None


class DebSource(Model):
    package: DebWord
    suite: DebWord
    # None: the mirror this machine's own apt sources use (aptsources.host_mirror).
    mirror: Mirror | None = None
    # Verifies the suite's Release file; apt never falls back to unsigned sources.
    keyring: AbsPath = "/usr/share/keyrings/debian-archive-keyring.gpg"


class KernelSource(Model):
    """Exactly one of the kinds in KINDS (each a field below, and a module in
    harness/sources/ that turns it into a tree)."""

    KINDS: ClassVar[tuple[str, ...]] = ("git", "path", "deb")

    git: GitSource | None = None
    path: Path | None = None
    deb: DebSource | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = [k for k in self.KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            kinds = f"{', '.join(self.KINDS[:-1])} or {self.KINDS[-1]}"
            raise ValueError(f"give exactly one of {kinds} (got {given or 'none'})")
        return self

    @property
    def kind(self) -> str:
        """The one kind given ("git", "path" or "deb")."""
        return next(k for k in self.KINDS if getattr(self, k) is not None)


# --- configs: a base defconfig target plus fragments from kernel-config/ --------------


class ConfigSet(Model):
    base: ConfigTarget = "defconfig"
    # Files under kernel-config/ (checked to exist, and to stay inside it, at load).
    fragments: list[RelPath] = Field(min_length=1)
