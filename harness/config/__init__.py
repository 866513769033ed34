"""lab.yaml: load, validate, and hand out typed, frozen settings.

Validation is pydantic's (extra keys forbidden everywhere), so a typo in lab.yaml is an
error naming the file, the key path and the expected form, not a silently ignored key.
lab.yaml is untrusted text: every string that becomes a folder name, a command-line
word, a git URL or a sources.list field is held to a narrow pattern at load.

One job per module; importers use `from harness.config import X`:
    checks.py          the strict Model base and the string rules (safe names, paths,
                       git URLs and refs, mirrors, SSH destinations, programs)
    schema_kernels.py  kernels: (git, path, deb and mbox sources, expect) and configs:
                       (config sets)
    schema_run.py      image:, vm:, hosts:, suites:, matrix:, defaults:
    lab.py             LabConfig: the whole file and the checks that span sections
    loading.py         reading the file (size, UTF-8, YAML, duplicate keys) and
                       pydantic's errors as lab.yaml key paths
"""

from __future__ import annotations

from harness.config.checks import GIT_SCHEMES, Model
from harness.config.lab import LabConfig
from harness.config.loading import DEFAULT_LAB_FILE, MAX_LAB_FILE_BYTES, load
from harness.config.schema_kernels import (
    ConfigSet,
    DebSource,
    GitSource,
    KernelSource,
    MboxSource,
)
from harness.config.schema_run import (
    Defaults,
    HostSpec,
    ImageSpec,
    MatrixSpec,
    SuiteKind,
    SuiteSpec,
    VmSpec,
)

__all__ = [
    "DEFAULT_LAB_FILE",
    "GIT_SCHEMES",
    "MAX_LAB_FILE_BYTES",
    "ConfigSet",
    "DebSource",
    "Defaults",
    "GitSource",
    "HostSpec",
    "ImageSpec",
    "KernelSource",
    "LabConfig",
    "MatrixSpec",
    "MboxSource",
    "Model",
    "SuiteKind",
    "SuiteSpec",
    "VmSpec",
    "load",
]
