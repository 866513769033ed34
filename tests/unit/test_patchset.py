"""A series from mail applied onto a base tree (harness/patchset.py), with real git."""

from __future__ import annotations

import email
import email.policy
import mailbox
import os
import re
import socket
import subprocess
from email.message import EmailMessage
from pathlib import Path

import pytest

from harness import patchset
from harness.errors import TreeError, UserError
from harness.paths import cache_dir
from harness.source import SourceTree
from harness.source.path import from_path
from tests.unit.fake_kernel import make_tree
from tests.unit.fake_series import make_series

GMEM = "virt/kvm/guest_memfd.c"
PRINTK = '/* guest_memfd */\nconst char gmemlab_hello[] = "gmemlab: guest_memfd says hello";\n'
TEST = "tools/testing/selftests/kvm/gmemlab_hello_test.c"


@pytest.fixture(autouse=True)
def lab_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("LAB_CACHE", str(cache))
    return cache


@pytest.fixture
def deb_base(lab_cache: Path) -> SourceTree:
    """An unpacked tarball in the cache, as the deb kind leaves it (no .git)."""
    root = make_tree(lab_cache / "sources" / "deb" / "trees" / "linux-source-7.3_7.3.4" / "linux")
    (root / ".clang-format").write_text("hidden by the tree's own .gitignore\n")
    (root / ".gitignore").write_text(".*\n*.o\n")
    tree = from_path("mainline", root)
    return SourceTree("mainline", "deb", tree.path, "7.3.4-1", "7.3.4-1", origin="deb")


def unappliable(mbox_text: str) -> str:
    """The first patch edited so it cannot apply: its context no longer matches the base
    and its preimage blob is unknown (so git am -3 cannot fall back to a 3-way merge)."""
    text = mbox_text.replace(" /* guest_memfd */", " /* guest memfd */", 1)
    return re.sub(r"^index [0-9a-f]+\.\.", "index 1234567..", text, count=1, flags=re.M)


def two_patches(base: Path, out: Path) -> Path:
    return make_series(
        base,
        [
            ("KVM: guest_memfd: say hello", {GMEM: PRINTK}),
            ("KVM: selftests: add gmemlab_hello_test", {TEST: "int main(void) { return 0; }\n"}),
        ],
        out,
    )


def test_a_series_applies_onto_a_deb_base_in_a_twin_of_its_path(
    deb_base: SourceTree, tmp_path: Path, lab_cache: Path
) -> None:
    box = two_patches(deb_base.path, tmp_path / "series.mbox")
    tree = patchset.apply_series(deb_base, box)
    assert [p["status"] for p in tree.patches] == ["applied", "applied"]
    assert [p["subject"] for p in tree.patches] == [
        "KVM: guest_memfd: say hello",
        "KVM: selftests: add gmemlab_hello_test",
    ]
    assert all(str(p["message_id"]).startswith("<") for p in tree.patches)
    assert all(len(str(p["sha256"])) == 64 for p in tree.patches)
    assert (tree.path / GMEM).read_text() == PRINTK and (tree.path / TEST).is_file()
    # Every file of the base came along, dotfiles its .gitignore hides included.
    assert (tree.path / ".clang-format").is_file() and (tree.path / "Makefile").is_file()
    assert not (deb_base.path / TEST).exists()  # the base is untouched
    # The compiler's paths relative to the build folder are the base's (ccache hits).
    base_build = cache_dir("builds") / "mainline-0123456789abcdef" / "obj"
    series_build = tree.build_root / "series-0123456789abcdef" / "obj"
    assert os.path.relpath(tree.path, series_build) == os.path.relpath(deb_base.path, base_build)
    assert tree.build_root.is_relative_to(lab_cache / "mbox")


def test_the_same_series_on_the_same_base_is_applied_once(
    deb_base: SourceTree, tmp_path: Path
) -> None:
    box = two_patches(deb_base.path, tmp_path / "series.mbox")
    first = patchset.apply_series(deb_base, box)
    marker = first.path / "untouched-by-a-second-apply"
    marker.write_text("")
    again = patchset.apply_series(deb_base, box)
    assert again == first and marker.exists()
    # Deterministic: the same patches give the same commit on a fresh apply.
    (first.build_root.parent / patchset.STATE).unlink()
    assert patchset.apply_series(deb_base, box).commit == first.commit


def test_a_patch_that_does_not_apply_is_named_with_its_files(
    deb_base: SourceTree, tmp_path: Path
) -> None:
    box = two_patches(deb_base.path, tmp_path / "series.mbox")
    broken = tmp_path / "broken.mbox"
    broken.write_text(unappliable(box.read_text()))
    with pytest.raises(TreeError) as err:
        patchset.apply_series(deb_base, broken)
    assert err.value.exit_code == 1
    (finding,) = err.value.findings
    assert finding.suite == "series" and finding.name == "patch 1"
    assert "patch 1/2 'KVM: guest_memfd: say hello' does not apply" in finding.reason
    assert GMEM in finding.reason  # the conflicting file
    assert finding.log is not None and finding.log.is_file()
    # Recorded per patch, the failed series' tree removed; a second try fails the same.
    with pytest.raises(TreeError):
        patchset.apply_series(deb_base, broken)
    state = (cache_dir("mbox") / next(
        p.name for p in cache_dir("mbox").iterdir() if (p / patchset.STATE).is_file()
    ) / patchset.STATE).read_text()  # fmt: skip
    assert '"not-tried"' in state and '"failed"' in state


def test_a_git_base_gets_a_new_worktree_of_its_commit(tmp_path: Path, lab_cache: Path) -> None:
    src = make_tree(tmp_path / "upstream", git=True)
    mirror = lab_cache / "git" / "upstream.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(src), str(mirror)], check=True)
    head = ["git", "-C", str(src), "rev-parse", "HEAD"]
    commit = subprocess.run(head, capture_output=True, text=True, check=True).stdout.strip()
    worktree = lab_cache / "worktrees" / commit
    subprocess.run(
        ["git", "-C", str(mirror), "worktree", "add", "-q", "--detach", str(worktree), commit],
        check=True,
    )
    base = SourceTree("series", "git", worktree, commit, "v7.3", origin="file://")
    tree = patchset.apply_series(base, two_patches(worktree, tmp_path / "s.mbox"))
    assert tree.base_commit == commit and tree.applied == 2
    assert tree.path == tree.build_root.parent / "worktrees" / commit
    assert not (worktree / TEST).exists()


def test_a_checkout_base_brings_what_its_git_tracks_or_would_add(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "linux", git=True)
    (root / ".gitignore").write_text("*.o\n")
    (root / "built.o").write_text("an in-tree build product\n")
    (root / "new.c").write_text("untracked, not ignored\n")
    base = from_path("dev", root)
    tree = patchset.apply_series(base, two_patches(root, tmp_path / "s.mbox"))
    assert (tree.path / "new.c").is_file() and not (tree.path / "built.o").exists()
    assert tree.path.name == "tree"  # outside the cache: no twin path to keep


def test_a_message_id_without_network_fails_at_once_naming_mbox_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def unreachable(*args: object, **kwargs: object) -> socket.socket:
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    with pytest.raises(UserError) as err:
        patchset.fetch("<20260618-gmem-v8-0-abc@google.com>")
    assert "lore.kernel.org is unreachable" in err.value.message
    assert "--mbox FILE" in err.value.message


def test_a_series_sent_base64_encoded_applies(deb_base: SourceTree, tmp_path: Path) -> None:
    """Only the touched files are checked out before git am: they are read from the
    decoded mail, as git am reads it (a QP or base64 body hides the diff lines)."""
    box = two_patches(deb_base.path, tmp_path / "series.mbox")
    encoded = mailbox.mbox(str(tmp_path / "b64.mbox"))
    for raw in mailbox.mbox(str(box)):
        msg = email.message_from_bytes(raw.as_bytes(), policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        body = msg.get_content()
        del msg["Content-Transfer-Encoding"]
        msg.set_content(body, cte="base64")
        encoded.add(msg)
    encoded.close()
    assert b"diff --git" not in (tmp_path / "b64.mbox").read_bytes()
    tree = patchset.apply_series(deb_base, tmp_path / "b64.mbox")
    assert tree.applied == 2 and (tree.path / GMEM).read_text() == PRINTK
    assert (tree.path / "Makefile").is_file()  # the rest of the tree came after
