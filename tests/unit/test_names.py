"""harness/names.py: every folder name the lab derives stays one plain path component."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness import build, names, runner
from harness.results import Recorder
from harness.source import SourceTree

HOSTILE = [
    "../../etc",
    "/tmp/my tree, v1/../linux",
    "linux/",
    "/",
    ".",
    "..",
    "...",
    "-rf",
    "--kernel=x",
    "a\nb",
    "a\0b",
    "~/linux",
    "$(reboot)",
    "`id`;rm -rf /",
    "ümlaut tree",
    "x" * 500,
    "con:nul|<>*?",
    "",
]


def plain(name: str) -> bool:
    return (
        bool(name)
        and "/" not in name
        and "\0" not in name
        and name not in (".", "..")
        and ".." not in name
        and not name.startswith(("-", "."))
        and len(name) <= 160
        and name.isascii()
        and all(c.isalnum() or c in "._-" for c in name)
    )


@pytest.mark.parametrize("text", HOSTILE)
def test_every_derived_name_is_one_plain_component(text: str) -> None:
    for derived in (
        names.kernel_slug(text),
        names.folder(text),
        names.cell_name(text, text, text),
        names.cell_name(text, "lab", "qemu"),
        names.build_folder(text, "0123456789abcdef"),
        names.latest_link(text, text),
    ):
        assert plain(derived), (text, derived)


def test_plain_names_stay_as_they_are() -> None:
    assert names.kernel_slug("mainline") == "mainline"
    assert names.cell_name("mainline", "lab", "qemu") == "mainline-lab-qemu"
    assert names.build_folder("mainline", "4a56cc7512ad449e") == "mainline-4a56cc7512ad449e"
    assert names.latest_link("mainline", "lab") == "latest-mainline-lab"
    assert names.folder("20260101-120000-00042") == "20260101-120000-00042"


def test_a_path_is_its_base_name_plus_a_hash_of_where_it_resolves(tmp_path: Path) -> None:
    a, b = tmp_path / "a" / "linux", tmp_path / "b" / "linux"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    sa, sb = names.kernel_slug(str(a)), names.kernel_slug(str(b))
    assert sa.startswith("linux-") and sb.startswith("linux-") and sa != sb
    # The same tree however it is spelled: '..', a trailing slash, a symlink.
    (tmp_path / "my tree, v1").mkdir()
    link = tmp_path / "my tree, v1" / "ln"
    link.symlink_to(a)
    for spelling in (f"{a}/", f"{tmp_path}/b/../a/linux", f"{link}"):
        assert names.kernel_slug(spelling) == sa, spelling


def test_names_that_sanitise_alike_do_not_collide() -> None:
    assert names.folder("a b") != names.folder("a_b") != names.folder("a/b")
    assert names.cell_name("x y", "lab", "qemu") != names.cell_name("x_y", "lab", "qemu")


@pytest.mark.parametrize("text", HOSTILE)
def test_run_folders_stay_under_the_results_root(tmp_path: Path, text: str) -> None:
    root = tmp_path / "results"
    req = runner.RunRequest(kernel=text, config=text, suites=("s",), results_root=root)
    rec = Recorder(root, req.cell, run_id=text or None)
    for path in (rec.root, rec.cell_dir):
        assert path.resolve().is_relative_to(root.resolve()), path
    assert rec.cell_dir.parent == rec.root and rec.root.parent == root


@pytest.mark.parametrize("text", HOSTILE)
def test_build_folders_stay_in_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    monkeypatch.setenv("LAB_CACHE", str(tmp_path / "cache"))
    tree = SourceTree("t", "path", tmp_path, "c0ffee", "v7.3")
    folder = build.build_dir_for(text, tree, "cfg")
    assert folder.parent == tmp_path / "cache" / "builds"
    assert plain(folder.name)
    assert os.path.normpath(folder) == str(folder)
