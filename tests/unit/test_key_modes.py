"""Private keys stay the owner's: the key files and folder, the staged copy, and the
base image that embeds the guest's host key (0600, not 0444: issue 15, item 14)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from harness import aptsources, image, keys
from harness.paths import cache_root
from tests.unit.test_image import make_lab


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_key_folder_is_owner_only(tmp_path: Path) -> None:
    folder = tmp_path / "keys"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    lk = keys.ensure_keys(folder)
    assert mode(folder) == 0o700
    assert mode(lk.client_key) == mode(lk.host_key) == 0o600


def test_loosened_host_key_is_tightened(tmp_path: Path) -> None:
    lk = keys.ensure_keys(tmp_path / "keys")
    lk.host_key.chmod(0o644)
    keys.ensure_keys(tmp_path / "keys")
    assert mode(lk.host_key) == 0o600


def test_staged_host_key_is_owner_only(tmp_path: Path) -> None:
    lk = keys.ensure_keys(tmp_path / "keys")
    recipe = tmp_path / "recipe"
    recipe.mkdir()
    stage = tmp_path / "stage"
    image._stage_overlay(recipe, lk, stage)
    assert mode(stage / "etc" / "ssh" / keys.HOST_KEY) == 0o600


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def fake_tools(monkeypatch: pytest.MonkeyPatch, seen: list[list[str]]) -> None:
    """mmdebstrap writes the raw disk, qemu-img converts it: just the files."""

    def run_logged(argv: list[object], **kwargs: object) -> None:
        words = [str(a) for a in argv]
        seen.append(words)
        Path(str(kwargs["log"])).touch()
        if words[0] == "qemu-img":
            Path(words[-1]).write_bytes(b"QFI\xfb")
        else:  # mmdebstrap: _build made work/<digest>/ for the raw disk
            (raw_dir,) = cache_root().glob("images/.build-*/*[0-9a-f]")
            (raw_dir / "root.ext4").write_bytes(b"\0")

    monkeypatch.setattr(image, "run_logged", run_logged)
    monkeypatch.setattr(image, "require_tools", lambda *tools: None)


def test_base_image_is_owner_only_when_built_and_when_reused(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_tools(monkeypatch, [])
    lab = make_lab(tmp_path, mirror="http://mirror.example/debian")
    built = image.ensure_image(lab)
    assert mode(built.base_qcow2) == 0o600
    built.base_qcow2.chmod(0o444)  # as images built before this change were
    again = image.ensure_image(lab)
    assert again.build_seconds == 0.0
    assert mode(again.base_qcow2) == 0o600


def test_image_uses_the_hosts_mirror_when_lab_yaml_names_none(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[str]] = []
    fake_tools(monkeypatch, seen)
    monkeypatch.setattr(aptsources, "host_mirror", lambda: "http://local.example/debian")
    lab = make_lab(tmp_path)
    assert lab.image.mirror is None
    built = image.ensure_image(lab)
    assert seen[0][-1] == "http://local.example/debian"
    meta = json.loads((built.base_qcow2.parent / "image.json").read_text())
    assert meta["mirror"] == "http://local.example/debian"
