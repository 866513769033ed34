"""LabConfig: the whole of lab.yaml, and the checks that span its sections.

Each section is checked by its own model; what needs two sections (defaults and the
matrix name real entries, a config set's fragments exist inside kernel-config/, paths
stay inside the checkout) is checked here, one problem a line.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Self

from pydantic import model_validator

from harness.config.checks import Model, SafeName, inside
from harness.config.schema_kernels import ConfigSet, KernelSource
from harness.config.schema_run import (
    Defaults,
    HostSpec,
    ImageSpec,
    MatrixSpec,
    SuiteSpec,
    VmSpec,
)
from harness.paths import REPO_ROOT


class LabConfig(Model):
    kernels: dict[SafeName, KernelSource]
    configs: dict[SafeName, ConfigSet]
    image: ImageSpec = ImageSpec()
    vm: VmSpec = VmSpec()
    hosts: dict[SafeName, HostSpec] = {}
    suites: dict[SafeName, SuiteSpec]
    matrix: dict[SafeName, MatrixSpec] = {}
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
        for name, ks in self.kernels.items():
            if ks.mbox is None:
                continue
            base = ks.mbox.base
            need("kernel", base, self.kernels, f"kernels.{name}.mbox.base")
            if base in self.kernels and self.kernels[base].mbox is not None:
                problems.append(
                    f"kernels.{name}.mbox.base: {base!r} is an mbox kernel itself; the base "
                    "must be a git, deb or path kernel"
                )
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
        if "qemu" in self.hosts:
            problems.append("hosts.qemu: 'qemu' names the lab VM target; rename the host")
        fragments = self.root / "kernel-config"
        for name, cs in self.configs.items():
            for frag in cs.fragments:
                if not inside(fragments, frag):
                    problems.append(
                        f"configs.{name}.fragments: {frag!r} leads outside {fragments} "
                        "(a symlink); use a file inside kernel-config/"
                    )
                elif not (fragments / frag).is_file():
                    problems.append(
                        f"configs.{name}.fragments: {frag!r} is not a file in {fragments}"
                    )
        for name, spec in self.suites.items():
            for key, problem in spec.kind_problems():
                problems.append(f"suites.{name}.{key}: {problem}")
            # The runner pushes it from the harness checkout (REPO_ROOT); a lab file
            # elsewhere has its own root: inside both, whichever is used.
            for root in dict.fromkeys((self.root, REPO_ROOT)):
                if spec.path is not None and not inside(root, spec.path):
                    problems.append(
                        f"suites.{name}.path: {spec.path!r} leads outside {root} (a "
                        "symlink); use a folder inside the repository"
                    )
        if not inside(self.root / "images", self.image.recipe):
            problems.append(
                f"image.recipe: {self.image.recipe!r} leads outside {self.root / 'images'} "
                "(a symlink); use a folder inside images/"
            )
        if problems:
            # One problem a line; loading.format_validation_error prints each on its own.
            raise ValueError("\n".join(problems))
        return self

    def fragment_path(self, fragment: str) -> Path:
        return self.root / "kernel-config" / fragment

    def recipe_dir(self) -> Path:
        return self.root / "images" / self.image.recipe
