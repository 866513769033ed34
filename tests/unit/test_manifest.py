"""manifest: KernelBuild's make time, the reproducer, and load_build's refusals.

A full write-and-load round trip is in test_build (it needs a finished build)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import arch, manifest
from harness.errors import UserError


def kernel_build(durations: dict[str, float]) -> manifest.KernelBuild:
    root = Path("/builds/dev-0123")
    return manifest.KernelBuild(
        kernel="dev",
        config_name="lab",
        build_dir=root,
        bzimage=root / "obj" / arch.HOST.kernel_image_path,
        vmlinux=root / "obj/vmlinux",
        system_map=root / "obj/System.map",
        config=root / "obj/.config",
        config_hash="cafe",
        commit="0123",
        describe="v7.3",
        dirty=False,
        selftests_dir=root / "selftests",
        selftests={},
        manifest=root / "manifest.json",
        log=root / "build.log",
        durations=durations,
    )


def test_make_seconds_counts_only_make_phases() -> None:
    durations = {"source": 30.0, "config": 1.0, "kernel": 2.5, "headers": 0.5}
    b = kernel_build(durations | {"selftests": 1.0, "manifest": 0.25})
    assert b.make_seconds == 5.0
    assert kernel_build({}).make_seconds == 0.0


def test_reproduce_record_names_fixed_env_and_image_target() -> None:
    rec = manifest.reproduce_record("dev", "lab", ["make", "-C", "/src", "O=/obj"])
    assert rec["lab"] == "lab build --kernel dev --config lab"
    assert rec["make"].startswith("KBUILD_BUILD_TIMESTAMP=")
    assert rec["make"].endswith(f"make -C /src O=/obj {arch.HOST.kernel_image}")
    assert "LC_ALL" not in rec["make"]


def test_load_build_rejects_missing_or_unfinished(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no manifest"):
        manifest.load_build(tmp_path / "manifest.json")
    (tmp_path / "manifest.json").write_text(json.dumps({"manifest_version": 1, "status": "x"}))
    with pytest.raises(UserError, match="not a finished build"):
        manifest.load_build(tmp_path / "manifest.json")
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(UserError, match="not valid JSON"):
        manifest.load_build(tmp_path / "manifest.json")


def test_write_manifest_replaces_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    manifest.write_manifest(path, {"status": "ok"})
    manifest.write_manifest(path, {"status": "failed"})
    assert json.loads(path.read_text()) == {"status": "failed"}
    assert not path.with_suffix(".json.tmp").exists()
