"""lab.yaml: load, validate, and hand out typed, frozen settings.

Validation is pydantic's (extra keys forbidden everywhere), so a typo in lab.yaml is an
error naming the file, the key path and the expected form, not a silently ignored key.
Each section's model belongs to the stage that uses it; cross-references between
sections (a config set's fragments exist, defaults name real entries) are checked here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness.errors import UserError
from harness.paths import REPO_ROOT

DEFAULT_LAB_FILE = REPO_ROOT / "lab.yaml"


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- kernels: where a kernel tree comes from -------------------------------------------


class GitSource(Model):
    url: str
    ref: str
    # The series' base commit, kept for A/B runs against the base tree.
    base: str | None = None


class DebSource(Model):
    package: str
    suite: str
    mirror: str = "http://deb.debian.org/debian"
    # Verifies the suite's Release file; apt never falls back to unsigned sources.
    keyring: str = "/usr/share/keyrings/debian-archive-keyring.gpg"


class KernelSource(Model):
    """Exactly one of git, path or deb."""

    git: GitSource | None = None
    path: Path | None = None
    deb: DebSource | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = [k for k in ("git", "path", "deb") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of git, path or deb (got {given or 'none'})")
        return self


# --- configs: a base defconfig target plus fragments from kernel-config/ --------------


class ConfigSet(Model):
    base: str = "defconfig"
    fragments: list[str] = Field(min_length=1)


# --- image and VM --------------------------------------------------------------------


class ImageSpec(Model):
    # A folder under images/ holding the recipe (package list, overlay files).
    recipe: str = "trixie"
    suite: str = "trixie"
    mirror: str = "http://deb.debian.org/debian"
    size_mib: Annotated[int, Field(ge=512)] = 4096


class VmSpec(Model):
    memory_mib: Annotated[int, Field(ge=256)] = 2048
    cpus: Annotated[int, Field(ge=1)] = 2
    # Two NUMA nodes by default so guest_memfd's mbind tests run instead of skipping.
    numa_nodes: Annotated[int, Field(ge=1, le=8)] = 2
    accel: Literal["auto", "kvm", "tcg"] = "auto"
    qemu: str = "qemu-system-x86_64"
    # lean: /usr/local/sbin/gmemlab-init (mounts, static user-net address, sshd), the
    # fast default; systemd: the image's full systemd boot with networkd DHCP.
    init: Literal["lean", "systemd"] = "lean"
    boot_timeout_s: Annotated[int, Field(ge=5)] = 180
    # No console output and no SSH for this long means the guest hung.
    silence_timeout_s: Annotated[int, Field(ge=5)] = 120
    cmdline_extra: list[str] = []


class HostSpec(Model):
    """A bare-metal host reached through the user's SSH config (alias or user@host)."""

    ssh: str
    workdir: str = "/var/tmp/gmemlab"
    # What the host is for, e.g. ["tdx"]; the matrix only places cells that need a
    # capability on hosts that declare it.
    capabilities: list[str] = []


# --- suites --------------------------------------------------------------------------


class SuiteSpec(Model):
    kind: Literal["pytest", "kselftest", "conversions-driver", "command"]
    timeout_s: Annotated[int, Field(ge=1)] = 600
    # kselftest: names of the built selftests to run (each with its own timeout).
    tests: list[str] = []
    # pytest: the test folder relative to the repo, pushed into the guest.
    path: str | None = None
    # command: an argv run in the guest (test-only suites, e.g. a deliberate failure).
    argv: list[str] = []


# --- matrix --------------------------------------------------------------------------


class MatrixSpec(Model):
    kernels: list[str] = Field(min_length=1)
    configs: list[str] = Field(min_length=1)
    # "qemu" (the VM above) or names from hosts:.
    targets: list[str] = ["qemu"]
    suites: list[str] | None = None


class Defaults(Model):
    kernel: str
    config: str
    target: str = "qemu"
    suites: list[str] = Field(min_length=1)


class LabConfig(Model):
    kernels: dict[str, KernelSource]
    configs: dict[str, ConfigSet]
    image: ImageSpec = ImageSpec()
    vm: VmSpec = VmSpec()
    hosts: dict[str, HostSpec] = {}
    suites: dict[str, SuiteSpec]
    matrix: dict[str, MatrixSpec] = {}
    defaults: Defaults
    # The folder lab.yaml was read from; fragments and recipes resolve against it.
    root: Path = REPO_ROOT

    @model_validator(mode="after")
    def _references_exist(self) -> Self:
        problems: list[str] = []

        def need(kind: str, name: str, table: Mapping[str, object], where: str) -> None:
            if name not in table:
                known = ", ".join(sorted(table)) or "none"
                problems.append(f"{where}: unknown {kind} {name!r} (known: {known})")

        targets = {"qemu": None, **self.hosts}
        need("kernel", self.defaults.kernel, self.kernels, "defaults.kernel")
        need("config", self.defaults.config, self.configs, "defaults.config")
        need("target", self.defaults.target, targets, "defaults.target")
        for suite in self.defaults.suites:
            need("suite", suite, self.suites, "defaults.suites")
        for name, cell in self.matrix.items():
            for k in cell.kernels:
                need("kernel", k, self.kernels, f"matrix.{name}.kernels")
            for c in cell.configs:
                need("config", c, self.configs, f"matrix.{name}.configs")
            for t in cell.targets:
                need("target", t, targets, f"matrix.{name}.targets")
            for s in cell.suites or []:
                need("suite", s, self.suites, f"matrix.{name}.suites")
        for name, cs in self.configs.items():
            for frag in cs.fragments:
                if not (self.root / "kernel-config" / frag).is_file():
                    problems.append(
                        f"configs.{name}.fragments: {frag!r} is not a file in "
                        f"{self.root / 'kernel-config'}"
                    )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def fragment_path(self, fragment: str) -> Path:
        return self.root / "kernel-config" / fragment

    def recipe_dir(self) -> Path:
        return self.root / "images" / self.image.recipe


def _format_validation_error(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: invalid lab configuration"]
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"]) or "(top level)"
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling against README.md, 'lab.yaml')"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def load(path: Path | None = None) -> LabConfig:
    """Read and validate lab.yaml; any problem is a UserError naming file and key."""
    path = (path or DEFAULT_LAB_FILE).resolve()
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(
            f"{path}: no such lab file", "pass --lab FILE or run from the checkout"
        ) from None
    except yaml.YAMLError as exc:
        raise UserError(
            f"{path}: not valid YAML: {exc}", "fix the syntax at the place named"
        ) from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping at the top level", "see README.md, lab.yaml")
    try:
        return LabConfig.model_validate({**raw, "root": path.parent})
    except ValidationError as exc:
        raise UserError(
            _format_validation_error(path, exc), "fix lab.yaml at the keys named"
        ) from None
