"""kmake: the up-to-date shortcut, the fixed build environment, make argv, per-run logs."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from harness import arch, kmake
from harness.paths import cache_root

pytestmark = pytest.mark.usefixtures("lab_cache")


def built(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A source tree and an object folder as a finished build leaves them (src, obj, stamp)."""
    src, obj = tmp_path / "src", tmp_path / "obj"
    (src / "virt/kvm").mkdir(parents=True)
    (src / "virt/kvm/guest_memfd.c").write_text("/* guest_memfd */\n")
    for rel in (arch.HOST.kernel_image_path, "vmlinux", "System.map", ".config"):
        (obj / rel).parent.mkdir(parents=True, exist_ok=True)
        (obj / rel).write_text(rel)
    stamp = obj / kmake.STAMP
    stamp.write_text("settings")
    later = time.time() + 5  # the build finished after every file was written
    os.utime(stamp, (later, later))
    return src, obj, stamp


def test_up_to_date_until_a_file_settings_or_artifact_changes(tmp_path: Path) -> None:
    src, obj, stamp = built(tmp_path)
    assert kmake.kernel_up_to_date(src, obj, stamp, "settings")
    assert not kmake.kernel_up_to_date(src, obj, stamp, "other settings")
    even_later = time.time() + 10
    os.utime(src / "virt/kvm/guest_memfd.c", (even_later, even_later))
    assert not kmake.kernel_up_to_date(src, obj, stamp, "settings")


def test_not_up_to_date_without_stamp_image_or_with_a_newer_config(tmp_path: Path) -> None:
    src, obj, stamp = built(tmp_path)
    (obj / arch.HOST.kernel_image_path).unlink()
    assert not kmake.kernel_up_to_date(src, obj, stamp, "settings")

    src, obj, stamp = built(tmp_path / "b")
    even_later = time.time() + 10
    os.utime(obj / ".config", (even_later, even_later))
    assert not kmake.kernel_up_to_date(src, obj, stamp, "settings")

    stamp.unlink()
    assert not kmake.kernel_up_to_date(src, obj, stamp, "settings")


def test_git_metadata_does_not_count_as_an_edit(tmp_path: Path) -> None:
    # A fetch or commit writes under .git; make never looks there, neither does the check.
    src, obj, stamp = built(tmp_path)
    (src / ".git").mkdir()
    (src / ".git/index").write_text("x")
    even_later = time.time() + 10
    os.utime(src / ".git/index", (even_later, even_later))
    assert kmake.kernel_up_to_date(src, obj, stamp, "settings")


def test_build_env_fixes_kbuild_identity_and_shares_ccache() -> None:
    env = kmake.build_env()
    for key, value in kmake.FIXED_ENV.items():
        assert env[key] == value
    assert env["CCACHE_BASEDIR"] == str(cache_root())
    assert env["CCACHE_DIR"] == str(cache_root() / "ccache")
    assert env["CCACHE_NOHASHDIR"] == "1"


def test_kernel_make_argv(tmp_path: Path) -> None:
    argv = kmake.kernel_make(tmp_path / "src", tmp_path / "obj", 3)
    assert argv[:3] == ["make", "-C", str(tmp_path / "src")]
    assert f"O={tmp_path / 'obj'}" in argv and "-j3" in argv
    assert "CC=ccache gcc" in argv and "HOSTCC=ccache gcc" in argv


def test_each_run_gets_its_own_log_and_build_log_names_the_newest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = kmake.new_log(tmp_path)
    first.write_text("compiled everything\n")
    # Another process's run in the same second (`lab run` right after `lab build`).
    monkeypatch.setattr(os, "getpid", lambda: os.getppid() + 100000)
    second = kmake.new_log(tmp_path)
    assert first != second and first.read_text() == "compiled everything\n"
    assert (tmp_path / "build.log").resolve() == second.resolve()


def test_install_config_keeps_mtime_when_unchanged(tmp_path: Path) -> None:
    src, dst = tmp_path / "cfg", tmp_path / "obj.config"
    src.write_text("CONFIG_KVM=y\n")
    kmake.install_config(src, dst)
    past = time.time() - 100
    os.utime(dst, (past, past))
    kmake.install_config(src, dst)
    assert dst.stat().st_mtime == pytest.approx(past)
    src.write_text("CONFIG_KVM=m\n")
    kmake.install_config(src, dst)
    assert dst.read_text() == "CONFIG_KVM=m\n"


def test_kbuild_quiet_lines_are_interesting() -> None:
    assert kmake.kbuild_line("  CC      kernel/fork.o")
    assert not kmake.kbuild_line("make[1]: Entering directory")
    assert not kmake.kbuild_line("  ")
