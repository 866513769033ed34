"""Survivor notes: the reasoning a test author keeps beside each surviving mutant.

For every mutant that survives, someone must either add a test that kills it or argue
that it is equivalent (no test can tell it from the pristine code). The notes file is
where that is written down, in the repository next to the tests, and `lab mutate
... --notes FILE` puts each note beside its survivor in the report:

    3f2a9c0d1e4b:                  # the mutant id from report.md
      status: equivalent           # equivalent | killed-by | open
      why: pages is never 16 here: the caller rounds up to a power of two above it
    9c81d2e3f4a5:
      status: killed-by
      test: tests/guest/test_gmem_ioctl.py::test_create_rejects_zero_size
      why: the new test creates a zero-size guest_memfd

The file is untrusted input like lab.yaml: unknown keys, a bad status or an id that is
not a mutant of the run are errors naming the file and the key (exit 3); the text is
only ever shown (HTML-escaped), never used as a path or a command.

What a note does to the numbers (account() below): a survivor argued equivalent leaves
the "non-equivalent" score denominators; a note claiming equivalence for a mutant that
some suite (or the boot) killed is contradicted by the run and counts for nothing.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from harness.config.checks import Model
from harness.config.loading import _StrictLoader  # lab.yaml's duplicate-key refusal
from harness.errors import UserError
from harness.mutate.classify import Verdict
from harness.mutate.mutants import ID_DIGITS
from harness.mutate.state import MutantRecord

MAX_NOTES_BYTES = 1 << 20
MAX_WHY_CHARS = 4000
_ID = re.compile(rf"[0-9a-f]{{{ID_DIGITS}}}")
# A pytest node id: a .py path, '::' names, an optional [parameters] suffix. It is
# shown, never opened, so this only keeps typos and control characters out.
_TEST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./+-]*\.py(::[A-Za-z_][A-Za-z0-9_]*)+(\[[^]\n`<>]*\])?")
_FIX = "fix the notes file at the keys named (README.md, 'Mutation testing')"


class NoteStatus(StrEnum):
    EQUIVALENT = "equivalent"  # argued: no test can tell it from the pristine code
    KILLED_BY = "killed-by"  # a test added after the run kills it (named in test:)
    OPEN = "open"  # known, not dealt with yet


class Note(Model):
    status: NoteStatus
    test: str | None = Field(default=None, max_length=300)
    why: str = Field(default="", max_length=MAX_WHY_CHARS)

    @model_validator(mode="after")
    def _consistent(self) -> Note:
        if self.status is NoteStatus.KILLED_BY and not self.test:
            raise ValueError("status killed-by needs test: (the pytest node id that kills it)")
        if self.test is not None and self.status is not NoteStatus.KILLED_BY:
            raise ValueError(f"test: is for status killed-by, not {self.status.value}")
        if self.test is not None and not _TEST.fullmatch(self.test):
            raise ValueError(
                f"test {self.test!r} is not a pytest node id (tests/guest/test_x.py::test_name)"
            )
        if self.status is NoteStatus.EQUIVALENT and not self.why.strip():
            raise ValueError("status equivalent needs why: (the argument is the point)")
        return self


@dataclass(frozen=True)
class Notes:
    """A loaded notes file: mutant id -> note."""

    path: Path
    sha256: str
    by_id: Mapping[str, Note]


class _NotesLoader(_StrictLoader):
    """Mapping keys stay text: a mutant id is hex, and YAML would read an all-digit one
    as a number (one with a leading 0 as an octal number, another id entirely)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.style is None:
                key_node.tag = "tag:yaml.org,2002:str"
        return super().construct_mapping(node, deep=deep)


def _read(path: Path) -> tuple[object, str]:
    try:
        if not path.is_file():
            what = "a folder" if path.is_dir() else "no such file"
            raise UserError(f"--notes {path}: {what}", "pass the survivor notes YAML file")
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"--notes {path}: cannot read it: {exc.strerror or exc}") from None
    if len(data) > MAX_NOTES_BYTES:
        raise UserError(f"{path}: {len(data)} bytes, more than a notes file can be", _FIX)
    digest = hashlib.sha256(data).hexdigest()
    try:
        return yaml.load(data.decode("utf-8"), Loader=_NotesLoader), digest  # a SafeLoader
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start})", "save it as UTF-8") from None
    except yaml.YAMLError as exc:
        detail = str(exc).replace('"<unicode string>"', str(path))
        raise UserError(f"{path}: not valid YAML: {detail}", _FIX) from None
    except RecursionError:
        raise UserError(f"{path}: nested too deeply to be a notes file", _FIX) from None


def _problems(key: str, err: ValidationError) -> list[str]:
    out = []
    for item in err.errors():
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            msg = "unknown key (a note has status, test and why)"
        where = ".".join(str(p) for p in item["loc"])
        out.append(f"  {key}{'.' + where if where else ''}: {msg}")
    return out


def load(path: Path, run_ids: Collection[str]) -> Notes:
    """Read and check a notes file against the run's mutant ids (every candidate of
    the selection). Any problem is one UserError naming the file and each bad key."""
    raw, digest = _read(path)
    if raw is None:
        return Notes(path, digest, {})  # an empty file: no notes yet
    if not isinstance(raw, dict):
        raise UserError(
            f"{path}: expected a mapping of mutant id -> note, got a {type(raw).__name__}", _FIX
        )
    problems: list[str] = []
    notes: dict[str, Note] = {}
    unknown: list[str] = []
    for key, value in raw.items():
        shown = repr(key)[:80]
        if not isinstance(key, str) or not _ID.fullmatch(key):
            problems.append(f"  {shown}: not a mutant id ({ID_DIGITS} hex digits, from report.md)")
            continue
        if key not in run_ids:
            unknown.append(key)
            continue
        try:
            notes[key] = Note.model_validate(value)
        except ValidationError as exc:
            problems.extend(_problems(key, exc))
    if unknown:
        problems.append(
            f"  {', '.join(unknown)}: no such mutant in this run (another file, selection or "
            "universalmutator version?)"
        )
    if problems:
        raise UserError("\n".join([f"{path}: invalid survivor notes", *problems]), _FIX)
    return Notes(path, digest, notes)


# --- what the notes do to a run -----------------------------------------------------


@dataclass(frozen=True)
class Accounting:
    """The run's survivors sorted by their notes (ids, in sampling order)."""

    # Argued equivalent and killed by nothing: out of the non-equivalent scores.
    equivalent: tuple[str, ...]
    # Argued equivalent, but a suite or the boot killed it: the note does not hold.
    contradicted: tuple[str, ...]
    # Survivors (survived at least one suite) not argued equivalent, by their note.
    killed_by: tuple[str, ...]
    open: tuple[str, ...]  # status open, no note, or a contradicted note
    # Notes on mutants that did not survive (killed, pruned or not run yet).
    elsewhere: tuple[str, ...]

    @property
    def survivors(self) -> int:
        return len(self.equivalent) + len(self.killed_by) + len(self.open)

    def summary(self) -> str:
        return (
            f"{self.survivors} survivor(s): {len(self.equivalent) + len(self.killed_by)} "
            f"accounted for ({len(self.equivalent)} argued equivalent, {len(self.killed_by)} "
            f"killed by a newer test), {len(self.open)} open"
        )


def account(done: Sequence[MutantRecord], suites: Sequence[str], notes: Notes | None) -> Accounting:
    """Sort the mutants that ran by their notes (none given: every survivor is open)."""
    by_id = notes.by_id if notes is not None else {}
    sorts: dict[str, list[str]] = {k: [] for k in ("eq", "contra", "killed", "open")}
    seen: set[str] = set()
    for rec in done:
        mid, note = rec.mutant.id, by_id.get(rec.mutant.id)
        killed = Verdict.KILLED in rec.verdicts.values()
        survived = any(rec.verdicts.get(s) is Verdict.SURVIVED for s in suites)
        if note is not None and note.status is NoteStatus.EQUIVALENT:
            seen.add(mid)
            if killed:
                sorts["contra"].append(mid)
            else:
                sorts["eq"].append(mid)
                continue
        if not survived:
            continue
        seen.add(mid)
        ok = note is not None and note.status is NoteStatus.KILLED_BY
        sorts["killed" if ok else "open"].append(mid)
    return Accounting(
        tuple(sorts["eq"]),
        tuple(sorts["contra"]),
        tuple(sorts["killed"]),
        tuple(sorts["open"]),
        tuple(i for i in by_id if i not in seen),
    )
