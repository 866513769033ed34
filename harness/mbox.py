"""A patch series that arrives as mail: read an mbox, apply it onto a tree, per patch.

A reviewer's question is "which revision, which patch": so the series is kept as its
mails (subject, Message-ID, author), applied one mail at a time with `git am -3`, and
each patch gets a status: applied, failed (with the conflicting files and git's own
words), or not tried because an earlier patch failed. A patch that does not apply is
a finding about the series (the cell fails), not a broken lab.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import mailbox
import os
import re
import subprocess
from dataclasses import asdict, dataclass
from email.message import EmailMessage
from pathlib import Path

from harness.errors import UserError

# "[PATCH v8 03/46]", "[RFC PATCH v3 7/43]", "[PATCH 2/2]": the patch's place in the series.
_NUMBERED = re.compile(r"\[[^\]]*?\b(\d+)/(\d+)\s*\]")
# A mail carries a patch when its text has a git diff header.
_DIFF = re.compile(r"^diff --git ", re.MULTILINE)
# Committer identity and date are fixed so the same mbox on the same base always gives
# the same commits (the build cache keys on it; git am would otherwise stamp "now").
_AM_ENV = {
    "GIT_COMMITTER_NAME": "gmemlab",
    "GIT_COMMITTER_EMAIL": "gmemlab@localhost",
    "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
}


@dataclass(frozen=True)
class Patch:
    """One patch mail of a series."""

    index: int  # its N in N/M, or its position among the patch mails
    total: int
    subject: str
    message_id: str
    author: str
    text: bytes  # the whole mail, as git am reads it

    @property
    def short_subject(self) -> str:
        """The subject without its [PATCH ...] prefix."""
        return re.sub(r"^(\[[^\]]*\]\s*)+", "", self.subject).strip()


@dataclass(frozen=True)
class PatchStatus:
    index: int
    subject: str
    message_id: str
    status: str  # "applied" | "failed" | "not-tried"
    detail: str = ""
    conflicts: tuple[str, ...] = ()

    def record(self) -> dict[str, object]:
        data = asdict(self)
        data["conflicts"] = list(self.conflicts)
        return data


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _text_of(msg: EmailMessage) -> str:
    """The mail's text: its body, or for a multipart mail the text parts that hold a diff
    (a patch sent as an attachment), else every text part."""
    if not msg.is_multipart():
        payload = msg.get_content() if msg.get_content_maintype() == "text" else ""
        return payload if isinstance(payload, str) else ""
    texts = []
    for part in msg.walk():
        if part.get_content_maintype() != "text" or part.is_multipart():
            continue
        try:
            content = part.get_content()
        except (LookupError, ValueError):
            content = part.get_payload(decode=True).decode("utf-8", "replace")  # type: ignore[union-attr]
        if isinstance(content, str):
            texts.append(content)
    with_diff = [t for t in texts if _DIFF.search(t)]
    return "\n".join(with_diff or texts)


def _flatten(msg: EmailMessage, text: str) -> bytes:
    """A single-part mail git am can read: the original headers that matter and the
    patch text as the body (git am cannot pick the diff out of an attachment itself)."""
    out = EmailMessage(policy=email.policy.default)
    for header in ("From", "Date", "Subject", "Message-ID"):
        if msg[header] is not None:
            out[header] = str(msg[header])
    out.set_content(text, subtype="plain", charset="utf-8", cte="8bit")
    return out.as_bytes()


def parse(path: Path) -> list[Patch]:
    """The patch mails of an mbox, in series order (cover letter and replies dropped).

    Raises UserError when the file is not an mbox with at least one patch.
    """
    if not path.is_file():
        raise UserError(f"mbox {path} does not exist", "pass the path of an mbox file")
    box = mailbox.mbox(str(path), factory=None, create=False)
    found: list[tuple[int, int, int, Patch]] = []
    try:
        for position, raw in enumerate(box):
            msg = email.message_from_bytes(raw.as_bytes(), policy=email.policy.default)
            assert isinstance(msg, EmailMessage)
            subject = " ".join(str(msg.get("Subject", "")).split())
            text = _text_of(msg)
            if not _DIFF.search(text):
                continue  # a cover letter, a review reply: not a patch
            if subject.lower().startswith("re:"):
                continue  # a reply quoting the diff
            m = _NUMBERED.search(subject)
            index, total = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
            body = raw.as_bytes() if not msg.is_multipart() else _flatten(msg, text)
            patch = Patch(
                index=index,
                total=total,
                subject=subject,
                message_id=str(msg.get("Message-ID", "")).strip(),
                author=str(msg.get("From", "")).strip(),
                text=body,
            )
            found.append((index, position, total, patch))
    finally:
        box.close()
    if not found:
        raise UserError(
            f"mbox {path} holds no patch mails (no 'diff --git' in any message)",
            "pass the series' mbox (b4 am <message-id> writes one; git format-patch "
            "--stdout does too)",
        )
    found.sort(key=lambda item: (item[0], item[1]))
    ordered = [p for _, _, _, p in found]
    return [
        Patch(i if p.index == 0 else p.index, p.total or len(ordered), p.subject,
              p.message_id, p.author, p.text)
        for i, p in enumerate(ordered, start=1)
    ]  # fmt: skip


def _git(tree: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **_AM_ENV, "GIT_TERMINAL_PROMPT": "0"}
    return subprocess.run(
        ["git", "-C", str(tree), *args], capture_output=True, text=True, env=env, check=check
    )


def _conflicts(tree: Path, am_output: str) -> tuple[str, ...]:
    """The files git could not patch: unmerged paths after a 3-way attempt, else the
    files named in its 'patch failed' lines."""
    unmerged = _git(tree, "diff", "--name-only", "--diff-filter=U", check=False).stdout
    files = [f for f in unmerged.splitlines() if f]
    if not files:
        files = re.findall(r"patch failed: ([^:\s]+):\d+", am_output)
        files += re.findall(r"CONFLICT \([^)]*\): Merge conflict in (\S+)", am_output)
        files += re.findall(r"error: (\S+): does not exist in index", am_output)
    return tuple(dict.fromkeys(files))


def apply(tree: Path, patches: list[Patch], workdir: Path) -> list[PatchStatus]:
    """git am -3 each patch in order onto tree's HEAD; stop at the first that fails.

    workdir keeps each patch as its own file and git's output per patch (the run's
    evidence). Nothing is left half-applied: a failed am is aborted.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    statuses: list[PatchStatus] = []
    failed = False
    for patch in patches:
        if failed:
            statuses.append(
                PatchStatus(patch.index, patch.short_subject, patch.message_id, "not-tried",
                            "an earlier patch did not apply")
            )  # fmt: skip
            continue
        mail = workdir / f"{patch.index:04d}.patch"
        mail.write_bytes(patch.text)
        am = _git(tree, "am", "-3", "--keep-cr", "--quiet", str(mail), check=False)
        output = (am.stdout + am.stderr).strip()
        (workdir / f"{patch.index:04d}.am.log").write_text(output + "\n")
        if am.returncode == 0:
            statuses.append(
                PatchStatus(patch.index, patch.short_subject, patch.message_id, "applied")
            )
            continue
        failed = True
        conflicts = _conflicts(tree, output)
        _git(tree, "am", "--abort", check=False)
        first = next((ln for ln in output.splitlines() if "error" in ln.lower()), output[:200])
        statuses.append(
            PatchStatus(patch.index, patch.short_subject, patch.message_id, "failed",
                        first.strip()[:300], conflicts)
        )  # fmt: skip
    return statuses


def describe_failure(statuses: list[PatchStatus]) -> str | None:
    """One line naming the patch that did not apply and its files, or None."""
    for s in statuses:
        if s.status == "failed":
            files = f" (conflicts in {', '.join(s.conflicts)})" if s.conflicts else ""
            return f"patch {s.index} '{s.subject}' does not apply{files}: {s.detail}"
    return None
