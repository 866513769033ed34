"""Survivor notes: loading and checking the YAML file, and how notes sort a run's
survivors (argued equivalent, killed by a newer test, open, contradicted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import UserError
from harness.mutate.classify import BOOT, Verdict
from harness.mutate.mutants import Mutant
from harness.mutate.notes import Note, Notes, NoteStatus, account, load
from harness.mutate.state import MutantRecord, Status

A, B, C = "aaaaaaaaaaa1", "bbbbbbbbbbb2", "ccccccccccc3"
# An id of decimal digits with a leading 0: YAML 1.1 would read it as an octal number.
DIGITS = "012345670123"
RUN = {A, B, C, DIGITS}
TEST = "tests/guest/test_gmem_ioctl.py::test_create_rejects_zero_size[private-0]"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "notes.yaml"
    path.write_text(text)
    return path


def test_a_valid_notes_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""\
{A}:
  status: equivalent
  why: |
    pages is never 16 here:
    the caller rounds up.
{B}: {{status: killed-by, test: "{TEST}"}}
{DIGITS}:
  status: open
""",
    )
    notes = load(path, RUN)
    assert set(notes.by_id) == {A, B, DIGITS}
    assert notes.by_id[A].status is NoteStatus.EQUIVALENT
    assert notes.by_id[A].why == "pages is never 16 here:\nthe caller rounds up.\n"
    assert notes.by_id[B].test == TEST
    assert notes.by_id[DIGITS].why == ""
    assert notes.path == path and len(notes.sha256) == 64


def test_an_empty_file_holds_no_notes(tmp_path: Path) -> None:
    assert load(write(tmp_path, "# nothing argued yet\n"), RUN).by_id == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"{A}: {{status: equivalent, why: x, reviewer: me}}", f"{A}.reviewer: unknown key"),
        (f"{A}: {{status: maybe}}", f"{A}.status: Input should be 'equivalent'"),
        (f"{A}: {{status: killed-by}}", "status killed-by needs test:"),
        (f"{A}: {{status: open, test: '{TEST}'}}", "test: is for status killed-by, not open"),
        (f"{A}: {{status: killed-by, test: 'rm -rf /'}}", "is not a pytest node id"),
        (f"{A}: {{status: killed-by, test: 't.py::t[`<b>`]'}}", "is not a pytest node id"),
        (f"{A}: {{status: equivalent}}", "status equivalent needs why:"),
        (f"{A}: {{status: equivalent, why: 7}}", f"{A}.why: Input should be a valid string"),
        (f"{A}: equivalent", f"{A}: Input should be a valid dictionary"),
        ("ddddddddddd4: {status: open}", "ddddddddddd4: no such mutant in this run"),
        ("kvm_gmem_fault: {status: open}", "'kvm_gmem_fault': not a mutant id (12 hex digits"),
        (f"{A}: {{status: open}}\n{A}: {{status: open}}", "duplicate key"),
        (f"- {A}", "expected a mapping of mutant id -> note, got a list"),
        (f"{A}: {{status: open", "not valid YAML"),
    ],
)
def test_bad_notes_name_the_file_and_the_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text + "\n")
    with pytest.raises(UserError) as err:
        load(path, RUN)
    assert str(path) in err.value.what
    assert expected in err.value.what
    assert err.value.exit_code == 3


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, f"{A}: {{status: maybe}}\n{B}: {{status: open, why: [1]}}\nzz: 1\n")
    with pytest.raises(UserError) as err:
        load(path, RUN)
    assert f"{A}.status" in err.value.what and f"{B}.why" in err.value.what
    assert "'zz': not a mutant id" in err.value.what


def test_a_missing_or_binary_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such file"):
        load(tmp_path / "nope.yaml", RUN)
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(UserError, match="not UTF-8"):
        load(path, RUN)


# --- accounting -----------------------------------------------------------------------

K, S, U = Verdict.KILLED, Verdict.SURVIVED, Verdict.UNKNOWN
SUITES = ["py", "kself"]


def rec(mid: str, verdicts: dict[str, Verdict]) -> MutantRecord:
    m = Mutant(mid, "f.c", 1, "a", "b", "rule", "diff")
    return MutantRecord(m, Status.DONE, verdicts=verdicts)


def notes_of(**by_id: Note) -> Notes:
    return Notes(Path("n.yaml"), "0" * 64, by_id)


EQ = Note(status=NoteStatus.EQUIVALENT, why="same")
KB = Note(status=NoteStatus.KILLED_BY, test=TEST)
OPEN = Note(status=NoteStatus.OPEN)


def test_account_sorts_survivors_by_their_notes() -> None:
    done = [
        rec("e1", {"py": S, "kself": S}),  # argued equivalent
        rec("e2", {"py": K, "kself": S}),  # argued equivalent, but py killed it
        rec("e3", {"py": S, "kself": S, BOOT: K}),  # argued equivalent, the boot crashed
        rec("k1", {"py": S, "kself": K}),  # a newer py test kills it
        rec("o1", {"py": S, "kself": S}),  # open
        rec("n1", {"py": U, "kself": S}),  # no note
        rec("x1", {"py": K, "kself": K}),  # killed: its note is about nothing surviving
    ]
    notes = notes_of(e1=EQ, e2=EQ, e3=EQ, k1=KB, o1=OPEN, x1=KB, gone=OPEN)
    acc = account(done, SUITES, notes)
    assert acc.equivalent == ("e1",)
    assert acc.contradicted == ("e2", "e3")
    assert acc.killed_by == ("k1",)
    # A contradicted note accounts for nothing: those survivors are open.
    assert acc.open == ("e2", "e3", "o1", "n1")
    assert acc.elsewhere == ("x1", "gone")
    assert acc.survivors == 6
    assert acc.summary() == (
        "6 survivor(s): 2 accounted for (1 argued equivalent, 1 killed by a newer test), 4 open"
    )


def test_without_notes_every_survivor_is_open() -> None:
    done = [rec("a", {"py": S, "kself": K}), rec("b", {"py": K, "kself": K})]
    acc = account(done, SUITES, None)
    assert acc.open == ("a",) and acc.equivalent == acc.killed_by == acc.elsewhere == ()
