"""Source stage: path (clean, dirty, not git), git over file://, unreachable URLs, deb."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from harness import aptsources, config, source
from harness.errors import UserError
from tests.unit.fake_kernel import LAB_FRAGMENT, git_commit, make_tree, write_lab


@pytest.fixture(autouse=True)
def lab_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("LAB_CACHE", str(cache))
    return cache


def test_clean_git_tree(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "linux", git=True)
    st = source.path.from_path("dev", tree)
    assert st.kind == "path"
    assert not st.dirty and st.diff_sha256 is None
    assert len(st.commit) == 40
    assert st.identity == st.commit
    assert st.path == tree.resolve()


def test_dirty_tree_is_recorded_with_diff_hash(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "linux", git=True)
    clean = source.path.from_path("dev", tree)
    (tree / "virt/kvm/guest_memfd.c").write_text("/* edited */\n")
    dirty = source.path.from_path("dev", tree)
    assert dirty.dirty and dirty.commit == clean.commit
    assert dirty.diff_sha256 is not None and dirty.identity != clean.identity
    assert dirty.describe.endswith("-dirty")
    (tree / "virt/kvm/guest_memfd.c").write_text("/* edited again */\n")
    assert source.path.from_path("dev", tree).diff_sha256 != dirty.diff_sha256


def test_untracked_file_makes_tree_dirty(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "linux", git=True)
    (tree / "virt/kvm/new.c").write_text("int y;\n")
    assert source.path.from_path("dev", tree).dirty


def test_non_git_tree_is_identified_by_content(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "linux")
    first = source.path.from_path("dev", tree)
    assert first.commit.startswith("tree-")
    (tree / "virt/kvm/guest_memfd.c").write_text("/* a longer edit */\n")
    assert source.path.from_path("dev", tree).commit != first.commit


def test_not_a_kernel_tree(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a kernel source tree"):
        source.path.from_path("x", tmp_path / "empty")


def test_prepare_source_accepts_a_path_and_rejects_unknown_names(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "linux")
    lab = config.load(write_lab(tmp_path / "lab", {"local": {"path": str(tree)}}, {"lab": "x"}))
    assert source.prepare_source(lab, str(tree)).path == tree.resolve()
    assert source.prepare_source(lab, "local").name == "local"
    with pytest.raises(UserError) as err:
        source.prepare_source(lab, "nosuchkernel")
    assert "known: local" in err.value.message


# --- git -----------------------------------------------------------------------------


def git_lab(tmp_path: Path, url: str, ref: str = "main") -> config.LabConfig:
    kernels = {"series": {"git": {"url": url, "ref": ref}}}
    return config.load(write_lab(tmp_path / "lab", kernels, {"lab": LAB_FRAGMENT}))


def test_git_source_over_file_url(tmp_path: Path) -> None:
    upstream = make_tree(tmp_path / "upstream", git=True)
    subprocess.run(["git", "-C", str(upstream), "tag", "v7.3"], check=True)
    lab = git_lab(tmp_path, upstream.as_uri())
    st = source.prepare_source(lab, "series")
    head = subprocess.run(
        ["git", "-C", str(upstream), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert st.kind == "git" and st.commit == head
    assert st.describe == "v7.3"  # tags pointing into the history come along
    assert (st.path / "virt/kvm/guest_memfd.c").is_file()
    assert not st.dirty

    # A new commit on the ref gives a new worktree; the old one stays for its builds.
    (upstream / "virt/kvm/guest_memfd.c").write_text("/* v2 */\n")
    new = git_commit(upstream, "v2")
    st2 = source.prepare_source(lab, "series")
    assert st2.commit == new and st2.path != st.path
    assert (st2.path / "virt/kvm/guest_memfd.c").read_text() == "/* v2 */\n"
    assert (st.path / "virt/kvm/guest_memfd.c").read_text() == "/* guest_memfd */\n"
    # Asking again reuses the worktree.
    assert source.prepare_source(lab, "series").path == st2.path


def test_unknown_ref_is_user_error(tmp_path: Path) -> None:
    upstream = make_tree(tmp_path / "upstream", git=True)
    lab = git_lab(tmp_path, upstream.as_uri(), ref="no-such-branch")
    with pytest.raises(UserError, match="no-such-branch"):
        source.prepare_source(lab, "series")


@pytest.mark.parametrize(
    # Plain http:// is refused at load (config.checks.GitUrl); https to a closed port stands in.
    "url",
    ["https://127.0.0.1:9/linux.git", "https://github.invalid/x/linux.git"],
)
def test_unreachable_url_fails_fast_naming_offline_alternatives(tmp_path: Path, url: str) -> None:
    lab = git_lab(tmp_path, url)
    start = time.monotonic()
    with pytest.raises(UserError) as err:
        source.prepare_source(lab, "series")
    assert time.monotonic() - start < 15
    text = err.value.message
    assert url in text
    assert "--kernel mainline" in text and "/path/to/linux" in text


# --- deb -----------------------------------------------------------------------------


def test_apt_options_keep_everything_under_the_cache(tmp_path: Path) -> None:
    spec = config.DebSource(package="linux-source-7.3", suite="trixie-backports")
    base = tmp_path / "apt"
    source.deb._write_apt_config(base, spec, "http://mirror.example/debian")
    opts = source.deb.apt_options(base)
    values = [o for o in opts if o != "-o"]
    paths = [v.split("=", 1)[1] for v in values if "=" in v and v.split("=", 1)[1].startswith("/")]
    assert paths and all(p.startswith(str(base)) for p in paths)
    assert "Dir::Etc::sourceparts=-" in values
    line = (base / "etc" / "sources.list").read_text()
    assert line == (
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
        "http://mirror.example/debian trixie-backports main\n"
    )


def test_unpack_deb_once(tmp_path: Path) -> None:
    # A package shaped like linux-source-X: /usr/src/linux-source-X.tar.xz.
    tree = make_tree(tmp_path / "build" / "linux-source-9.9")
    pkg = tmp_path / "pkg"
    (pkg / "usr" / "src").mkdir(parents=True)
    (pkg / "DEBIAN").mkdir()
    (pkg / "DEBIAN" / "control").write_text(
        "Package: linux-source-9.9\nVersion: 9.9-1\nArchitecture: all\n"
        "Maintainer: t <t@example.invalid>\nDescription: fake\n"
    )
    subprocess.run(
        [
            "tar",
            "-cJf",
            str(pkg / "usr/src/linux-source-9.9.tar.xz"),
            "-C",
            str(tree.parent),
            tree.name,
        ],
        check=True,
    )
    deb = tmp_path / "linux-source-9.9_9.9-1_all.deb"
    subprocess.run(["dpkg-deb", "-b", "-Zxz", str(pkg), str(deb)], check=True, capture_output=True)
    dest = tmp_path / "trees" / "linux-source-9.9_9.9-1"
    unpacked = source.deb._unpack_deb(deb, dest)
    assert unpacked == dest / "linux-source-9.9"
    assert (unpacked / "Makefile").is_file()
    # Second call: the marker answers, nothing is unpacked again.
    (unpacked / "marker").write_text("kept")
    assert source.deb._unpack_deb(deb, dest) == unpacked
    assert (unpacked / "marker").read_text() == "kept"


def test_missing_keyring_is_user_error() -> None:
    spec = config.DebSource(package="p", suite="s", keyring="/nonexistent.gpg")
    with pytest.raises(UserError, match="debian-archive-keyring"):
        source.deb.from_deb("mainline", spec)


@pytest.fixture
def no_mirror(tmp_path: Path) -> config.DebSource:
    """A deb source that names no mirror, with a keyring that exists."""
    keyring = tmp_path / "archive.gpg"
    keyring.write_bytes(b"")
    return config.DebSource(
        package="linux-source-7.3", suite="trixie-backports", keyring=str(keyring)
    )


def test_deb_mirror_defaults_to_the_hosts_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_mirror: config.DebSource
) -> None:
    spec = no_mirror
    monkeypatch.setattr(aptsources, "host_mirror", lambda: "http://local.example/debian")

    def stop(argv: list[object], **kwargs: object) -> None:
        raise RuntimeError("stop before apt-get runs")

    monkeypatch.setattr(source.deb, "run_logged", stop)
    with pytest.raises(RuntimeError, match="stop before"):
        source.deb.from_deb("mainline", spec)
    lists = sorted((tmp_path / "cache").rglob("sources.list"))
    assert [p.read_text() for p in lists] == [
        f"deb [signed-by={spec.keyring}] http://local.example/debian trixie-backports main\n"
    ]


def test_no_host_mirror_is_a_user_error_before_apt_runs(
    monkeypatch: pytest.MonkeyPatch, no_mirror: config.DebSource
) -> None:

    def none_found() -> str:
        raise UserError("no Debian mirror found", "set kernels.<name>.deb.mirror in lab.yaml")

    monkeypatch.setattr(aptsources, "host_mirror", none_found)
    with pytest.raises(UserError, match=r"deb\.mirror"):
        source.deb.from_deb("mainline", no_mirror)


@pytest.mark.parametrize(
    "mirror",
    [
        "http://m.example/d trixie main",
        "[trusted=yes] http://m",
        "http://m/\ndeb x",
        "http://m.example/debian\n",
    ],
)
def test_sources_line_refuses_a_mirror_that_would_add_fields(mirror: str) -> None:
    spec = config.DebSource(package="p", suite="s", mirror="http://ok.example/debian")
    with pytest.raises(UserError, match="not a plain"):
        source.deb.sources_line(spec, mirror)


def test_git_calls_end_options_before_url_and_ref(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []

    class Spy(subprocess.Popen):  # type: ignore[type-arg]
        def __init__(self, args: Any, *rest: Any, **kwargs: Any) -> None:
            if isinstance(args, (list, tuple)) and args and str(args[0]) == "git":
                calls.append([str(a) for a in args])
                assert kwargs["env"]["GIT_ALLOW_PROTOCOL"] == "https:ssh:git:file"
            super().__init__(args, *rest, **kwargs)

    upstream = make_tree(tmp_path / "upstream", git=True)
    lab = git_lab(tmp_path, upstream.as_uri())
    monkeypatch.setattr(subprocess, "Popen", Spy)
    source.prepare_source(lab, "series")
    with_url = [argv for argv in calls if upstream.as_uri() in argv]
    assert {argv[argv.index("--") - 1] for argv in with_url} >= {"ls-remote", "--force"}
    for argv in with_url:
        assert argv.index("--") < argv.index(upstream.as_uri()), argv


def test_every_lab_yaml_kind_has_a_preparer() -> None:
    # A kind added to lab.yaml's schema without a module here would be a KeyError at run.
    assert set(source.KINDS) == set(config.KernelSource.KINDS)
