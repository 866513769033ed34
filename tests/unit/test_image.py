"""The image recipe: its hash, its package list, the mmdebstrap command, build-or-reuse."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from harness import config, image, keys
from harness.errors import UserError


def make_lab(tmp_path: Path, **image_spec: object) -> config.LabConfig:
    recipe = tmp_path / "images" / "trixie"
    (recipe / "overlay" / "etc").mkdir(parents=True, exist_ok=True)
    if not (recipe / "packages").exists():
        (recipe / "packages").write_text("# comment\nopenssh-server\n\npython3  # inline\n")
        (recipe / "overlay" / "etc" / "hostname").write_text("gmemlab\n")
    (tmp_path / "kernel-config").mkdir(exist_ok=True)
    (tmp_path / "kernel-config" / "lab.config").write_text("CONFIG_KVM=y\n")
    return config.LabConfig.model_validate(
        {
            "kernels": {"local": {"path": "/src/linux"}},
            "configs": {"lab": {"fragments": ["lab.config"]}},
            "suites": {"s": {"kind": "command", "argv": ["true"]}},
            "defaults": {"kernel": "local", "config": "lab", "suites": ["s"]},
            "image": image_spec,
            "root": tmp_path,
        }
    )


@pytest.fixture
def lab_keys(tmp_path: Path) -> keys.LabKeys:
    return keys.ensure_keys(tmp_path / "keys")


def test_package_list_drops_comments_and_blanks(tmp_path: Path) -> None:
    lab = make_lab(tmp_path)
    assert image.packages(lab.recipe_dir()) == ["openssh-server", "python3"]


def test_shipped_recipe_has_the_issue_packages() -> None:
    lab = config.load()
    names = set(image.packages(lab.recipe_dir()))
    wanted = {"openssh-server", "python3", "python3-pytest", "kmod", "iproute2", "procps"}
    assert wanted | {"util-linux", "kexec-tools"} <= names
    init = lab.recipe_dir() / "overlay" / "usr" / "local" / "sbin" / "gmemlab-init"
    assert init.stat().st_mode & 0o111


def test_hash_is_stable_for_an_unchanged_recipe(tmp_path: Path, lab_keys: keys.LabKeys) -> None:
    lab = make_lab(tmp_path)
    assert image.recipe_hash(lab, lab_keys) == image.recipe_hash(lab, lab_keys)


@pytest.mark.parametrize(
    "change",
    ["packages", "overlay", "mode", "new-file", "size", "suite", "keys"],
)
def test_hash_changes_with_every_input(tmp_path: Path, lab_keys: keys.LabKeys, change: str) -> None:
    lab = make_lab(tmp_path)
    before = image.recipe_hash(lab, lab_keys)
    recipe = lab.recipe_dir()
    used_keys = lab_keys
    if change == "packages":
        (recipe / "packages").write_text("openssh-server\npython3\nkmod\n")
    elif change == "overlay":
        (recipe / "overlay" / "etc" / "hostname").write_text("other\n")
    elif change == "mode":
        (recipe / "overlay" / "etc" / "hostname").chmod(0o755)
    elif change == "new-file":
        (recipe / "overlay" / "etc" / "motd").write_text("hi\n")
    elif change == "size":
        lab = make_lab(tmp_path, size_mib=2048)
    elif change == "suite":
        lab = make_lab(tmp_path, suite="forky")
    elif change == "keys":
        used_keys = keys.ensure_keys(tmp_path / "other-keys")
    assert image.recipe_hash(lab, used_keys) != before


def test_missing_recipe_is_a_user_error(tmp_path: Path, lab_keys: keys.LabKeys) -> None:
    lab = make_lab(tmp_path, recipe="nope")
    with pytest.raises(UserError, match="does not exist"):
        image.recipe_hash(lab, lab_keys)


def test_mmdebstrap_command(tmp_path: Path) -> None:
    lab = make_lab(tmp_path, mirror="http://mirror.example/debian")
    stage, raw = tmp_path / "my stage", tmp_path / "work dir" / "root.ext4"
    argv = image.mmdebstrap_argv(lab, stage, raw, ["openssh-server", "python3"], "unshare")
    assert argv[:4] == ["mmdebstrap", "--mode=unshare", "--variant=minbase",
                        "--include=openssh-server,python3"]  # fmt: skip
    # Suite, target and mirror are argv words, never pasted into a hook's shell text.
    assert argv[-3:] == ["trixie", "/dev/null", "http://mirror.example/debian"]
    hooks = [a.removeprefix("--customize-hook=") for a in argv if a.startswith("--customize")]
    assert hooks[0] == f"sync-in {shlex.quote(str(stage))} /"
    assert "passwd --lock root" in hooks[1]
    assert "mkfs.ext4" in hooks[2] and "4096M" in hooks[2]
    assert shlex.quote(str(raw)) in hooks[2]


def test_cached_image_is_reused_without_building(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAB_CACHE", str(tmp_path / "cache"))
    lab = make_lab(tmp_path)
    built: list[str] = []

    def fake_build(lab_: config.LabConfig, lk: keys.LabKeys, digest: str, final: Path) -> float:
        built.append(digest)
        final.mkdir(parents=True)
        (final / image.BASE_NAME).write_bytes(b"QFI\xfb")
        (final / "image.json").write_text("{}")
        return 12.5

    monkeypatch.setattr(image, "_build", fake_build)
    first = image.ensure_image(lab)
    second = image.ensure_image(lab)
    assert built == [first.recipe_hash]
    assert first.build_seconds == 12.5 and second.build_seconds == 0.0
    assert second.base_qcow2 == first.base_qcow2
    assert second.base_qcow2.parent.name == first.recipe_hash
    assert second.user == "root"
    assert second.host_key_line.startswith("ssh-ed25519 ")
    assert second.client_key.is_file()

    (lab.recipe_dir() / "packages").write_text("openssh-server\nkmod\n")
    third = image.ensure_image(lab)
    assert third.recipe_hash != first.recipe_hash
    assert len(built) == 2


def test_staged_overlay_carries_the_keys(tmp_path: Path, lab_keys: keys.LabKeys) -> None:
    lab = make_lab(tmp_path)
    stage = tmp_path / "stage"
    image._stage_overlay(lab.recipe_dir(), lab_keys, stage)
    assert (stage / "etc" / "hostname").read_text() == "gmemlab\n"
    assert (stage / "root" / ".ssh" / "authorized_keys").read_text() == (
        lab_keys.client_pubkey.read_text()
    )
    assert (stage / "etc" / "ssh" / keys.HOST_KEY).read_bytes() == lab_keys.host_key.read_bytes()


def test_prune_keeps_only_the_current_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAB_CACHE", str(tmp_path / "cache"))
    lab = make_lab(tmp_path)

    def fake_build(lab_: config.LabConfig, lk: keys.LabKeys, digest: str, final: Path) -> float:
        final.mkdir(parents=True)
        (final / image.BASE_NAME).write_bytes(b"QFI\\xfb")
        (final / "image.json").write_text("{}")
        (final.parent / f"{digest}.build.log").write_text("log")
        return 1.0

    monkeypatch.setattr(image, "_build", fake_build)
    old = image.ensure_image(lab)
    (lab.recipe_dir() / "packages").write_text("kmod\n")
    new = image.ensure_image(lab)
    removed = image.prune(new)
    names = sorted(p.name for p in removed)
    assert names == sorted([old.recipe_hash, f"{old.recipe_hash}.build.log",
                            f"{old.recipe_hash}.lock"])  # fmt: skip
    assert new.base_qcow2.is_file() and not old.base_qcow2.exists()
