"""`lab mutate` end to end on a tiny path kernel: --list and its filters, a whole run
with a fake runner (real gcc for the objects), resuming by repeating the command, and
SIGTERM in the middle of a mutant restoring the tree."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from harness import cli, history, history_mutate, interrupt
from harness.commands import mutate as command
from harness.mutate.classify import ANY
from harness.mutate.engine import RunOutcome
from harness.mutate.workcopy import copy_root
from harness.results import Outcome
from tests.unit.fake_kernel import LAB_FRAGMENT, write_lab
from tests.unit.mutate_fakes import FILE, SOURCE, FakeRunner, make_c_tree, object_build

pytestmark = pytest.mark.skipif(
    shutil.which("gcc") is None or shutil.which("rsync") is None, reason="needs gcc and rsync"
)


@pytest.fixture(autouse=True)
def lab_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def kernel(tmp_path: Path) -> Path:
    tree = make_c_tree(tmp_path / "linux")
    (tree / "scripts" / "kconfig").mkdir(parents=True)  # what the source stage checks
    return tree


@pytest.fixture
def lab_file(tmp_path: Path, kernel: Path) -> Path:
    return write_lab(tmp_path / "lab", {"dev": {"path": str(kernel)}}, {"lab": LAB_FRAGMENT})


def lab(lab_file: Path, *args: str) -> int:
    return cli.main(["--lab", str(lab_file), "mutate", "--kernel", "dev", "--file", FILE, *args])


def test_list_prints_the_selected_mutants_in_sampling_order(
    lab_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert lab(lab_file, "--list", "--lines", "8-9", "--seed", "4") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("mutants on 2 selected lines, in sampling order:")
    rows = out[1:]
    assert rows and all(f"{FILE}:8:" in r or f"{FILE}:9:" in r for r in rows)
    assert lab(lab_file, "--list", "--lines", "8-9", "--seed", "4") == 0
    assert capsys.readouterr().out.splitlines()[1:] == rows
    # Filters intersect: the function's lines within the range.
    assert lab(lab_file, "--list", "--function", "kvm_gmem_pages", "--lines", "1-4") == 0
    assert "on 3 selected lines" in capsys.readouterr().out


def test_bad_selections_are_user_errors(
    lab_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert lab(lab_file, "--list", "--function", "kvm_gmem_nope") == 3
    assert "no definition of kvm_gmem_nope" in capsys.readouterr().err
    assert lab(lab_file, "--list", "--lines", "9-2") == 3
    assert lab(lab_file, "--list", "--series") == 3
    assert "--series needs a git kernel with a base" in capsys.readouterr().err
    empty = tmp_path / "empty.diff"
    empty.write_text("")
    assert lab(lab_file, "--list", "--diff", str(empty)) == 3
    assert "no line to mutate" in capsys.readouterr().err
    assert cli.main(["--lab", str(lab_file), "mutate", "--file", "../x.c", "--list"]) == 3
    # --suite-timeout is checked by argparse, the same way for lab run and lab mutate.
    for argv in (["mutate", "--file", FILE, "--list"], ["run"]):
        for bad in ("0", "-5", "ten"):
            with pytest.raises(SystemExit) as info:
                cli.main(["--lab", str(lab_file), *argv, "--suite-timeout", bad])
            assert info.value.code == 3, (argv, bad)
    assert "must be at least 1 second" in capsys.readouterr().err


def test_mutant_ids_select_exactly_those_mutants(
    lab_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert lab(lab_file, "--list") == 0
    every = [row.split()[1] for row in capsys.readouterr().out.splitlines()[1:]]
    chosen = sorted(every[3:5])
    assert lab(lab_file, "--list", "--mutant", chosen[1], "--mutant", chosen[0]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert sorted(row.split()[1] for row in rows) == chosen
    assert lab(lab_file, "--list", "--mutant", "000000000000") == 3
    assert "--mutant 000000000000: no such mutant" in capsys.readouterr().err


class Runner(FakeRunner):
    """FakeRunner that can send this process SIGTERM in the middle of a mutant."""

    # A class attribute: the test sets it for the runner the command will make.
    sigterm_on_call: int | None = None
    # What harness.interrupt's flag said as the SIGTERM unwound the runner.
    flag_after_sigterm: str | None = None

    def run(
        self, tree: Path, suites: Sequence[str], deadline_s: float, *, label: str
    ) -> RunOutcome:
        if self.sigterm_on_call == len(self.calls) + 1:
            self.calls.append((label, tuple(suites), (tree / FILE).read_text()))
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler raises long before this ends
            finally:
                Runner.flag_after_sigterm = interrupt.requested()
        return super().run(tree, suites, deadline_s, label=label)


@pytest.fixture
def wired(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Runner]:
    """The command with a fake runner and an object build by gcc in the work copy."""
    made: list[Runner] = []

    def runner(**kwargs: object) -> Runner:
        r = Runner(
            copy_root(),
            rules={">": {"k": Outcome.FAIL}, "return pages * extra": {"d": Outcome.CRASH}},
        )
        made.append(r)
        return r

    def compiler(runner: object, work: Path, run_dir: Path, deadline_s: float) -> object:
        return object_build(work, tmp_path / "obj")

    monkeypatch.setattr(command, "LabRunner", runner)
    monkeypatch.setattr(command, "_object_build", compiler)
    return made


def test_a_whole_run_then_the_same_command_finds_it_finished(
    lab_file: Path, tmp_path: Path, kernel: Path, wired: list[Runner]
) -> None:
    results = tmp_path / "results"
    args = ["--suites", "k,d", "--sample", "3", "--seed", "2", "--results", str(results)]
    assert lab(lab_file, *args) == 0
    state = json.loads((results / "state.json").read_text())
    assert state["complete"] is True
    done = [r for r in state["records"].values() if r["status"] == "done"]
    assert len(done) == 3
    assert (results / "report.md").is_file() and (results / "report.html").is_file()
    assert json.loads((results / "scores.json").read_text())["complete"] is True
    # The source tree was never touched: mutants went into the copy under the cache.
    assert (kernel / FILE).read_text() == SOURCE
    work = next(copy_root().glob("*/Makefile")).parent
    assert (work / FILE).read_text() == SOURCE
    # The run is in the history beside its folder, with its kernel and scores.
    with history.opened(tmp_path / history.DB_NAME) as db:
        (row,) = history_mutate.mutation_runs(db)
    assert (row.kernel, row.config, row.complete, row.ran) == ("dev", "lab", True, 3)
    assert list(row.scores) == ["k", "d", ANY]
    # The same command again: a finished run is only rendered (and recorded) again; no
    # runner, no copy of the tree, no build.
    report_before = (results / "report.md").stat().st_mtime_ns
    assert lab(lab_file, *args) == 0
    assert len(wired) == 1
    assert (results / "report.md").stat().st_mtime_ns != report_before


def test_sigterm_mid_mutant_restores_and_the_rerun_continues(
    lab_file: Path, tmp_path: Path, wired: list[Runner]
) -> None:
    results = tmp_path / "results"
    args = ["--suites", "k,d", "--sample", "3", "--seed", "2", "--results", str(results)]
    Runner.sigterm_on_call = 3  # baseline, mutant 1, then SIGTERM inside mutant 2
    try:
        assert lab(lab_file, *args) == 130
    finally:
        Runner.sigterm_on_call = None
    # harness.interrupt's handlers: the flag the SSH polling loops check was set too.
    assert Runner.flag_after_sigterm == "SIGTERM"
    first = wired[0]
    assert first.calls[2][2] != SOURCE, "SIGTERM came while the mutant was applied"
    work = next(copy_root().glob("*/Makefile")).parent
    assert (work / FILE).read_text() == SOURCE
    state = json.loads((results / "state.json").read_text())
    assert state["applied"] is None and state["complete"] is False
    assert sum(r["status"] == "done" for r in state["records"].values()) == 1
    assert "**Incomplete:**" in (results / "report.md").read_text()
    with history.opened(tmp_path / history.DB_NAME) as db:
        (partial,) = history_mutate.mutation_runs(db)
    assert (partial.complete, partial.ran) == (False, 1)

    assert lab(lab_file, *args) == 0
    second = wired[-1]
    # The baseline is kept; mutant 1 is not run again; mutants 2 and 3 run.
    assert [c[0].rsplit("-", 1)[1] for c in second.calls] == ["1", "1"]
    assert first.calls[1][0] not in [c[0] for c in second.calls]
    state = json.loads((results / "state.json").read_text())
    assert state["complete"] is True
    # The resumed run's final numbers replace the partial ones: one row.
    with history.opened(tmp_path / history.DB_NAME) as db:
        (final,) = history_mutate.mutation_runs(db)
    assert (final.pk, final.complete, final.ran) == (partial.pk, True, 3)


def survivors(results: Path) -> list[str]:
    state = json.loads((results / "state.json").read_text())
    return [
        mid
        for mid, r in state["records"].items()
        if r["status"] == "done" and "survived" in r["verdicts"].values()
    ]


def test_notes_re_render_the_same_finished_run(
    lab_file: Path,
    tmp_path: Path,
    wired: list[Runner],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The default run folder (named by the settings hash), under tmp_path.
    monkeypatch.setattr(command, "REPO_ROOT", tmp_path)
    args = ["--suites", "k,d", "--sample", "3", "--seed", "2"]
    assert lab(lab_file, *args) == 0
    (results,) = (tmp_path / "results").glob("mutate-*")
    alive = survivors(results)
    assert alive, "the fixture's rules let some mutant survive"
    notes = tmp_path / "notes.yaml"
    notes.write_text(f"{alive[0]}: {{status: equivalent, why: 'same <object> code'}}\n")
    capsys.readouterr()
    assert lab(lab_file, *args, "--notes", str(notes)) == 0
    # Same folder (notes are not a setting), nothing ran, the note is in the report.
    assert list((tmp_path / "results").glob("mutate-*")) == [results]
    assert len(wired) == 1
    assert "is a finished run: rendering its report" in capsys.readouterr().err
    text = (results / "report.md").read_text()
    assert "## Argued equivalent (1)" in text and "> same &lt;object&gt; code" in text
    with history.opened(tmp_path / "results" / history.DB_NAME) as db:
        (row,) = history_mutate.mutation_runs(db)
    assert row.argued_equivalent == 1


def test_bad_notes_stop_before_anything_runs(
    lab_file: Path, tmp_path: Path, wired: list[Runner], capsys: pytest.CaptureFixture[str]
) -> None:
    notes = tmp_path / "notes.yaml"
    notes.write_text("000000000000: {status: equivalent, why: typo}\n")
    results = tmp_path / "results"
    assert lab(lab_file, "--results", str(results), "--notes", str(notes)) == 3
    err = capsys.readouterr().err
    assert str(notes) in err and "000000000000: no such mutant in this run" in err
    assert wired == [] and not results.exists()


def test_a_history_that_cannot_be_written_does_not_change_the_exit_code(
    lab_file: Path, tmp_path: Path, wired: list[Runner], capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / history.DB_NAME).mkdir()  # where the run's history would go
    args = ["--suites", "k,d", "--sample", "2", "--results", str(tmp_path / "results")]
    assert lab(lab_file, *args) == 0
    assert "[history] warning: this mutation run is not in the history" in (capsys.readouterr().err)
