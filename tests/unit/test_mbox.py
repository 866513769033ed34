"""The mbox reader and the per-patch apply statuses, on series made by real git."""

from __future__ import annotations

import subprocess
from email.message import EmailMessage
from pathlib import Path

import pytest

from harness import mbox
from harness.errors import UserError

ENV = ["-c", "user.name=Alice Dev", "-c", "user.email=alice@example.org"]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *ENV, "-C", str(repo), *args], capture_output=True, text=True, check=True
    ).stdout


@pytest.fixture
def series(tmp_path: Path) -> tuple[Path, Path]:
    """A base repo and a two-patch series (with a cover letter) as one mbox file."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "gmem.c").write_text("int a;\nint b;\nint c;\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "base")
    base = git(repo, "rev-parse", "HEAD").strip()
    (repo / "gmem.c").write_text("int a;\nint b2;\nint c;\n")
    git(repo, "commit", "-qam", "KVM: guest_memfd: rename b")
    (repo / "test.c").write_text("int main(void) { return 0; }\n")
    git(repo, "add", "test.c")
    git(repo, "commit", "-qm", "KVM: selftests: add a test")
    out = git(repo, "format-patch", "--stdout", "--cover-letter", "--subject-prefix=PATCH v8",
              "--thread", f"{base}..HEAD")  # fmt: skip
    box = tmp_path / "series.mbox"
    box.write_text(out)
    git(repo, "reset", "-q", "--hard", base)
    return repo, box


def test_parse_keeps_order_subject_and_message_id(series: tuple[Path, Path]) -> None:
    _, box = series
    patches = mbox.parse(box)
    assert [p.index for p in patches] == [1, 2]
    assert [p.total for p in patches] == [2, 2]
    assert patches[0].subject == "[PATCH v8 1/2] KVM: guest_memfd: rename b"
    assert patches[0].short_subject == "KVM: guest_memfd: rename b"
    assert patches[1].message_id.startswith("<") and patches[1].message_id.endswith(">")
    assert patches[0].message_id != patches[1].message_id
    assert "Alice Dev" in patches[0].author


def test_parse_orders_by_patch_number_not_file_order(
    tmp_path: Path, series: tuple[Path, Path]
) -> None:
    _, box = series
    text = box.read_text()
    mails = ["From " + m for m in text.split("\nFrom ")[0:]]
    mails[0] = mails[0].removeprefix("From ")
    reversed_box = tmp_path / "reversed.mbox"
    reversed_box.write_text("\n".join(reversed(mails)))
    assert [p.index for p in mbox.parse(reversed_box)] == [1, 2]


def test_apply_records_each_patch(series: tuple[Path, Path], tmp_path: Path) -> None:
    repo, box = series
    statuses = mbox.apply(repo, mbox.parse(box), tmp_path / "am")
    assert [s.status for s in statuses] == ["applied", "applied"]
    assert (repo / "test.c").exists()
    assert "int b2;" in (repo / "gmem.c").read_text()
    assert mbox.describe_failure(statuses) is None


def test_apply_deterministic_commits(series: tuple[Path, Path], tmp_path: Path) -> None:
    repo, box = series
    base = git(repo, "rev-parse", "HEAD").strip()
    mbox.apply(repo, mbox.parse(box), tmp_path / "one")
    first = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "reset", "-q", "--hard", base)
    mbox.apply(repo, mbox.parse(box), tmp_path / "two")
    assert git(repo, "rev-parse", "HEAD").strip() == first


def test_patch_that_does_not_apply_is_named_and_later_ones_not_tried(
    series: tuple[Path, Path], tmp_path: Path
) -> None:
    repo, box = series
    # The context line "int a;" no longer matches: the first patch cannot apply.
    (repo / "gmem.c").write_text("int zz;\nint b;\nint yy;\n")
    git(repo, "commit", "-qam", "diverge")
    statuses = mbox.apply(repo, mbox.parse(box), tmp_path / "am")
    assert [s.status for s in statuses] == ["failed", "not-tried"]
    assert statuses[0].conflicts == ("gmem.c",)
    line = mbox.describe_failure(statuses)
    assert line is not None and "patch 1 'KVM: guest_memfd: rename b'" in line
    assert "gmem.c" in line
    # Nothing half-applied: the tree is clean and no am is in progress.
    assert git(repo, "status", "--porcelain") == ""
    assert not (repo / ".git" / "rebase-apply").exists()


def test_multipart_mail_with_patch_attachment(tmp_path: Path, series: tuple[Path, Path]) -> None:
    repo, box = series
    first = mbox.parse(box)[0]
    diff = first.text.decode().split("\n---\n", 1)[1]
    msg = EmailMessage()
    msg["From"] = "Bob <bob@example.org>"
    msg["Subject"] = "[PATCH 1/1] KVM: guest_memfd: rename b"
    msg["Message-ID"] = "<attached-1@example.org>"
    msg["Date"] = "Wed, 02 Dec 2026 05:00:00 +0000"
    msg.set_content("Please see the attached patch.\n")
    msg.add_attachment("---\n" + diff, subtype="x-patch", filename="0001.patch")
    attached = tmp_path / "attached.mbox"
    attached.write_bytes(b"From bob@example.org Wed Dec  2 05:00:00 2026\n" + msg.as_bytes())
    patches = mbox.parse(attached)
    assert [(p.index, p.message_id) for p in patches] == [(1, "<attached-1@example.org>")]
    statuses = mbox.apply(repo, patches, tmp_path / "am")
    assert statuses[0].status == "applied", statuses[0].detail
    assert "int b2;" in (repo / "gmem.c").read_text()


def test_replies_and_cover_letter_are_not_patches(tmp_path: Path) -> None:
    box = tmp_path / "thread.mbox"
    box.write_text(
        "From x Wed Dec  2 05:00:00 2026\nSubject: [PATCH 0/1] cover\nMessage-ID: <c@x>\n\n"
        "Cover text.\n\n"
        "From x Wed Dec  2 05:00:00 2026\nSubject: Re: [PATCH 1/1] fix\nMessage-ID: <r@x>\n\n"
        "> diff --git a/f b/f\nLooks good.\n"
    )
    with pytest.raises(UserError, match="no patch mails"):
        mbox.parse(box)


def test_missing_mbox_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        mbox.parse(tmp_path / "nope.mbox")
