"""lab.yaml validation: the shipped file loads; mistakes name the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness import config
from harness.errors import UserError


def write_lab(tmp_path: Path, data: dict[str, object]) -> Path:
    (tmp_path / "kernel-config").mkdir(exist_ok=True)
    (tmp_path / "kernel-config" / "lab.config").write_text("CONFIG_KVM=y\n")
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def minimal() -> dict[str, object]:
    return {
        "kernels": {"local": {"path": "/src/linux"}},
        "configs": {"lab": {"fragments": ["lab.config"]}},
        "suites": {"gmem-ioctl": {"kind": "pytest", "path": "tests/guest"}},
        "defaults": {"kernel": "local", "config": "lab", "suites": ["gmem-ioctl"]},
    }


def test_shipped_lab_file_loads() -> None:
    lab = config.load()
    assert lab.defaults.kernel == "series"
    assert lab.kernels["mainline"].deb is not None
    assert lab.kernels["mainline"].deb.package == "linux-source-7.3"
    assert lab.kernels["series"].git is not None
    assert lab.kernels["series"].git.ref == "guest_memfd-inplace-conversion-v3"


def test_minimal_file_gets_defaults(tmp_path: Path) -> None:
    lab = config.load(write_lab(tmp_path, minimal()))
    assert lab.vm.accel == "auto"
    assert lab.vm.numa_nodes == 2
    assert lab.fragment_path("lab.config") == tmp_path / "kernel-config" / "lab.config"


def test_unknown_key_names_its_path(tmp_path: Path) -> None:
    data = minimal()
    data["vm"] = {"memroy_mib": 1024}
    with pytest.raises(UserError) as err:
        config.load(write_lab(tmp_path, data))
    assert "vm.memroy_mib" in err.value.message
    assert "unknown key" in err.value.message
    assert str(tmp_path / "lab.yaml") in err.value.message


def test_kernel_needs_exactly_one_source(tmp_path: Path) -> None:
    data = minimal()
    data["kernels"] = {"both": {"path": "/a", "deb": {"package": "p", "suite": "s"}}}
    data["defaults"] = {**data["defaults"], "kernel": "both"}  # type: ignore[dict-item]
    with pytest.raises(UserError, match="exactly one of git, path or deb"):
        config.load(write_lab(tmp_path, data))


def test_defaults_must_name_known_entries(tmp_path: Path) -> None:
    data = minimal()
    data["defaults"] = {"kernel": "nope", "config": "lab", "suites": ["gmem-ioctl", "ghost"]}
    with pytest.raises(UserError) as err:
        config.load(write_lab(tmp_path, data))
    assert "unknown kernel 'nope'" in err.value.message
    assert "unknown suite 'ghost'" in err.value.message


def test_missing_fragment_file_is_named(tmp_path: Path) -> None:
    data = minimal()
    data["configs"] = {"lab": {"fragments": ["lab.config", "absent.config"]}}
    with pytest.raises(UserError, match=r"'absent\.config' is not a file"):
        config.load(write_lab(tmp_path, data))


def test_wrong_type_is_named(tmp_path: Path) -> None:
    data = minimal()
    data["vm"] = {"cpus": "many"}
    with pytest.raises(UserError, match=r"vm\.cpus"):
        config.load(write_lab(tmp_path, data))


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kernels: [\n")
    with pytest.raises(UserError, match="not valid YAML"):
        config.load(bad)
    with pytest.raises(UserError, match="no such lab file"):
        config.load(tmp_path / "absent.yaml")
