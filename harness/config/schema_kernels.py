"""lab.yaml's `kernels:` (where a kernel tree comes from) and `configs:` (how it is
configured): the models the source and config stages read."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Self

from pydantic import AfterValidator, Field, model_validator

from harness.config.checks import (
    AbsPath,
    Capability,
    ConfigTarget,
    DebWord,
    GitRef,
    GitUrl,
    MessageId,
    Mirror,
    Model,
    RelPath,
    SafeName,
)
from harness.features import check_name

# A guest-probe feature name (harness/features.py), checked at load.
FeatureName = Annotated[str, AfterValidator(check_name)]

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


class MboxSource(Model):
    """A series from mail applied onto another lab.yaml kernel (harness/patchset.py)."""

    # The series as an mbox (b4 am, git format-patch --stdout, a patchwork download),
    # relative to the lab file's folder unless absolute ...
    file: Path | None = None
    # ... or its Message-ID, fetched with `b4 am` (needs b4 and a reachable lore).
    message_id: MessageId | None = None
    # The kernel it applies onto: a git, deb or path kernel of this lab file.
    base: SafeName

    @model_validator(mode="after")
    def _file_or_message_id(self) -> Self:
        if (self.file is None) == (self.message_id is None):
            raise ValueError("give exactly one of file (an mbox) or message_id")
        return self


class KernelSource(Model):
    """Exactly one of the kinds in KINDS (each a field below, and a module in
    harness/source/ that turns it into a tree), plus what the kernel must probe with."""

    KINDS: ClassVar[tuple[str, ...]] = ("git", "path", "deb", "mbox")

    git: GitSource | None = None
    path: Path | None = None
    deb: DebSource | None = None
    mbox: MboxSource | None = None
    # Guest-probe features this kernel must have (e.g. [attrs2_gmem]): each one the
    # probe finds absent after boot is a fail result (harness/expect.py).
    expect: list[FeatureName] = []

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = [k for k in self.KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            kinds = f"{', '.join(self.KINDS[:-1])} or {self.KINDS[-1]}"
            raise ValueError(f"give exactly one of {kinds} (got {given or 'none'})")
        return self

    @property
    def kind(self) -> str:
        """The one kind given ("git", "path", "deb" or "mbox")."""
        return next(k for k in self.KINDS if getattr(self, k) is not None)


# --- configs: a base defconfig target plus fragments from kernel-config/ --------------


class ConfigSet(Model):
    base: ConfigTarget = "defconfig"
    # Files under kernel-config/ (checked to exist, and to stay inside it, at load).
    fragments: list[RelPath] = Field(min_length=1)
    # What a host must offer for this config's cells to mean anything, e.g. [tdx]: on a
    # host without it every suite skips with the probe's reason (harness/run_host.py).
    # The lab VM target ignores it (its guest suite skips what the VM lacks).
    needs: list[Capability] = []
