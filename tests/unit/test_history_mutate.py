"""`lab mutate`'s runs in the history: recording (a resumed run replaces its partial
numbers), import walking mutation run folders, the v2 -> v3 upgrade, and
`lab history mutations`."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from harness import cli, history, history_mutate, history_query, history_record
from harness.mutate import state as st
from harness.mutate.classify import ANY, Verdict
from harness.mutate.notes import load as load_notes
from harness.mutate.report import render
from harness.mutate.state import MutationState, Status
from harness.paths import REPO_ROOT
from tests.unit.outcomes import P
from tests.unit.test_mutate_report import make_state

from .runfolders import make_run


def mutation_run(results: Path, name: str = "mutate-linux-7.3-lab-0123456789") -> Path:
    """A partial mutation run folder, rendered with notes ([1] argued equivalent, [0]
    killed by a newer test)."""
    run_dir = results / name
    run_dir.mkdir(parents=True)
    state = make_state(run_dir)
    ids = [r.mutant.id for r in state.walked()]
    notes = run_dir.parent / f"{name}.notes.yaml"
    notes.write_text(
        f"{ids[0]}: {{status: killed-by, test: 'tests/guest/test_a.py::test_b'}}\n"
        f"{ids[1]}: {{status: equivalent, why: extra is 1}}\n"
    )
    render(state, run_dir, load_notes(notes, set(state.order)), kernel="linux-7.3", config="lab")
    return run_dir


def finish(run_dir: Path) -> MutationState:
    """What a resumed run does: the last mutant runs (killed by both), the run completes."""
    state = st.load(run_dir)
    assert state is not None
    last = state.with_status(Status.READY)[0]
    last.status = Status.DONE
    last.verdicts = {"gmem-ioctl": Verdict.KILLED, "kselftests": Verdict.KILLED}
    state.complete = True
    st.save(state, run_dir)
    render(state, run_dir, kernel="linux-7.3", config="lab")
    return state


def test_record_then_a_resumed_run_replaces_its_numbers(tmp_path: Path) -> None:
    results = tmp_path / "results"
    run_dir = mutation_run(results)
    warnings: list[str] = []
    got = history_mutate.record_or_warn(results, run_dir, warnings.append)
    assert got is not None and got.status == "new" and warnings == []
    run = got.run
    assert (run.kernel, run.config, run.files) == ("linux-7.3", "lab", ["virt/kvm/guest_memfd.c"])
    assert (run.seed, run.sample, run.ran, run.complete, run.finished) == (3, 4, 4, False, None)
    assert (run.argued_equivalent, run.killed_by, run.open_survivors) == (1, 1, 0)
    assert list(run.scores) == ["gmem-ioctl", "kselftests", ANY]
    ksel = run.scores["kselftests"]
    assert (ksel.killed, ksel.survived, ksel.unknown, ksel.percent) == (2, 2, 0, "50%")
    # Without the mutant argued equivalent: 2 killed of 3.
    assert (ksel.ne_killed, ksel.ne_survived, ksel.ne_percent) == (2, 1, "67%")
    again = history_mutate.record_or_warn(results, run_dir, warnings.append)
    assert again is not None and again.status == "unchanged"

    finish(run_dir)  # rendered without notes this time: every survivor is open
    final = history_mutate.record_or_warn(results, run_dir, warnings.append)
    assert final is not None and final.status == "updated" and warnings == []
    assert final.run.pk == run.pk and final.run.complete and final.run.finished
    assert final.run.ran == 5
    assert final.run.scores["kselftests"].killed == 3
    assert (final.run.argued_equivalent, final.run.open_survivors) == (0, 2)
    with history.opened(history.default_path(results)) as db:
        assert len(history_mutate.mutation_runs(db)) == 1


def test_a_failure_to_record_is_a_warning(tmp_path: Path) -> None:
    run_dir = mutation_run(tmp_path / "results")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    warnings: list[str] = []
    assert history_mutate.record_or_warn(blocker, run_dir, warnings.append) is None
    assert len(warnings) == 1 and "this mutation run is not in the history" in warnings[0]
    # A folder that is not a mutation run: a warning too.
    assert history_mutate.record_or_warn(tmp_path, tmp_path, warnings.append) is None
    assert "not a mutation run folder" in warnings[1]


def test_import_records_mutation_runs_but_not_their_attempts(tmp_path: Path) -> None:
    results = tmp_path / "results"
    make_run(results, "clean", {("gmem", "t1"): P}, started="2025-01-01T01:00:00")
    run_dir = mutation_run(results)
    # A mutant's `lab run`: not a run of the kernel under test.
    make_run(run_dir / "attempts" / "m1", "m1", {("gmem", "t1"): P}, started="2025-01-01T02:00")
    damaged = results / "mutate-damaged"
    (damaged / "pristine").mkdir(parents=True)
    (damaged / "state.json").write_text("{")
    with history.opened(history.default_path(results)) as db:
        report = history_record.import_dirs(db, [results])
        assert [r.run.run_id for r in report.recorded] == ["clean"]
        assert [m.run.name for m in report.mutations] == [run_dir.name]
        assert [p.name for p, _ in report.skipped] == ["mutate-damaged"]
        again = history_record.import_dirs(db, [results])
        assert again.count("unchanged", mutations=True) == 1
        assert [r.run_id for r in history_query.last_runs(db)] == ["clean"]


def test_upgrade_from_version_2_keeps_the_runs(tmp_path: Path) -> None:
    path = tmp_path / history.DB_NAME
    conn = sqlite3.connect(path)
    for step in history.MIGRATIONS[:2]:
        step(conn)
    conn.execute(
        "INSERT INTO runs (key, run_id, folder, cell, started, verdict, exit_code, complete, "
        "summary_sha256) VALUES ('r1@t', 'r1', '/x', 'c', '2025-01-01T00:00:00', 'PASS', 0, 1, "
        "'h')"
    )
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    with history.opened(path) as db:
        assert db.version == history.SCHEMA_VERSION == 3
        assert [r.run_id for r in history_query.last_runs(db)] == ["r1"]
        assert history_mutate.mutation_runs(db) == []
    with history.opened(path) as db:
        got = history_mutate.record_mutation(db, mutation_run(tmp_path / "results"))
    assert got.status == "new"


def test_the_names_it_repeats_match_the_mutate_package() -> None:
    assert history_mutate.ANY == ANY
    assert (history_mutate.STATE_FILE, history_mutate.PRISTINE_DIR) == (
        st.STATE_FILE,
        st.PRISTINE_DIR,
    )


def test_recording_runs_does_not_load_the_mutate_package() -> None:
    # `lab run` records through history_record: it must not pay for universalmutator.
    code = "import sys, harness.history_record; print('harness.mutate' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


# --- lab history mutations ------------------------------------------------------------


def lab(*argv: str) -> int:
    return cli.main(list(argv))


def test_history_mutations_lists_scores_over_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    older = mutation_run(results, "mutate-linux-7.3-lab-aaaaaaaaaa")
    newer = mutation_run(results, "mutate-linux-7.3-lab-bbbbbbbbbb")
    finish(newer)
    for run_dir, when in ((older, "2026-01-01T00:00:00"), (newer, "2026-02-01T00:00:00")):
        state = st.load(run_dir)
        assert state is not None
        state.created = when
        st.save(state, run_dir)
    assert lab("history", "import", str(results), "--results", str(results)) == 0
    assert "2 mutation runs: 2 new" in capsys.readouterr().out

    args = ("--results", str(results), "--kernel", "linux-7.3", "--file", "virt/kvm/guest_memfd.c")
    assert lab("history", "mutations", *args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        f"| run | started | kernel | files | seed/sample | ran | gmem-ioctl | kselftests | {ANY} "
        "| survivors: equivalent, killed-by, open |"
    )
    assert out[2].startswith(f"| {older.name} (partial) | 2026-01-01T00:00:00 | linux-7.3 |")
    assert "| 50% (2/4), non-eq. 67% | 75% (3/4), non-eq. 100% | 1, 1, 0 |" in out[2]
    assert out[3].startswith(f"| {newer.name} | 2026-02-01T00:00:00 |")
    assert "| 3/4 | 5 | 75% (3/4) | 60% (3/5) | 80% (4/5) | 0, 0, 2 |" in out[3]
    assert lab("history", "mutations", "--results", str(results), "--last", "1") == 0
    assert len(capsys.readouterr().out.splitlines()) == 3

    assert lab("history", "mutations", "--results", str(results), "--kernel", "nope") == 3
    assert "kernels with mutation runs: linux-7.3" in capsys.readouterr().err
    assert lab("history", "mutations", "--results", str(tmp_path / "empty")) == 0
    assert "no mutation runs recorded" in capsys.readouterr().out
