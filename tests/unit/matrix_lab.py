"""A small lab.yaml for the matrix tests: kernels a and b, one command suite, a matrix."""

from __future__ import annotations

from pathlib import Path

import yaml

from harness import config


def matrix_lab(
    tmp_path: Path,
    configs: dict[str, list[str]],
    nightly: dict[str, list[str]],
    **sections: object,
) -> config.LabConfig:
    """tmp_path/lab.yaml, loaded: kernels a and b (paths that need not exist), the config
    sets `configs` (name -> fragments, each fragment CONFIG_KVM=y), suite `s` (`true`),
    defaults a/lab/s, the matrix `nightly`, and any other sections as given."""
    fragments = tmp_path / "kernel-config"
    fragments.mkdir(exist_ok=True)
    for name in {f for names in configs.values() for f in names}:
        (fragments / name).write_text("CONFIG_KVM=y\n")
    data = {
        "kernels": {"a": {"path": "/src/a"}, "b": {"path": "/src/b"}},
        "configs": {name: {"fragments": names} for name, names in configs.items()},
        "suites": {"s": {"kind": "command", "argv": ["true"]}},
        "defaults": {"kernel": "a", "config": "lab", "suites": ["s"]},
        "matrix": {"nightly": nightly},
        **sections,
    }
    (tmp_path / "lab.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return config.load(tmp_path / "lab.yaml")
