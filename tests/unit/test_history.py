"""results/history.sqlite: schema and migrations, import, idempotence, queries."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from harness import history, history_query, history_record
from harness.errors import InfraError, UserError
from tests.unit.outcomes import F, P, S

from .runfolders import make_run

HARNESS = Path(history.__file__).parent


def test_new_database_is_at_the_latest_version_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "results" / history.DB_NAME
    with history.opened(path) as db:
        assert db.version == history.SCHEMA_VERSION == len(history.MIGRATIONS)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"runs", "results"} <= tables
    conn.close()


def test_upgrade_from_version_1_backfills_identity(tmp_path: Path) -> None:
    # A version-1 database: released step 1 (never edited) and a run inserted by hand,
    # so it has no identity column yet.
    path = tmp_path / history.DB_NAME
    conn = sqlite3.connect(path)
    history.MIGRATIONS[0](conn)
    conn.execute(
        "INSERT INTO runs (key, run_id, folder, cell, commit_sha, dirty, config_hash, "
        "target, started, verdict, exit_code, complete, summary_sha256) VALUES "
        "('r1@t', 'r1', '/x', 'mainline-lab-qemu', 'c0ffee', 0, 'cfg1', 'qemu', "
        "'2025-01-01T00:00:00', 'PASS', 0, 1, 'h')"
    )
    conn.execute(
        "INSERT INTO results (run_pk, seq, suite, test, outcome) VALUES (1, 0, 's', 't', 'pass')"
    )
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()

    with history.opened(path) as db:
        assert db.version == history.SCHEMA_VERSION
        (run,) = history_query.last_runs(db)
        assert run.identity == "c0ffee|cfg1|qemu"
        assert history_query.outcomes_by_identity(db, run.identity) == {("s", "t"): [P]}


def test_a_newer_database_is_refused_with_the_remedy(tmp_path: Path) -> None:
    path = tmp_path / history.DB_NAME
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {history.SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(UserError, match="schema version") as err, history.opened(path):
        pass
    assert "lab history import" in err.value.message


def test_a_file_that_is_not_a_database_is_an_infra_error(tmp_path: Path) -> None:
    path = tmp_path / history.DB_NAME
    path.write_bytes(b"not sqlite at all, " * 100)
    with (
        pytest.raises(InfraError, match="cannot open the run history") as err,
        history.opened(path),
    ):
        pass
    assert "lab history import" in err.value.message


def test_record_reads_the_summary(tmp_path: Path) -> None:
    run = make_run(
        tmp_path,
        "r1",
        {("kselftests", "a"): P, ("kselftests", "b"): (F, "boom"), ("gmem", "c"): (S, "no x")},
        started="2025-01-01T02:00:00",
        mbox_sha256="m" * 64,
    )
    recorded = history_record.record(tmp_path, run)
    assert recorded.status == "new"
    row = recorded.run
    assert (row.run_id, row.cell, row.kernel, row.config) == (
        "r1",
        "mainline-lab-qemu",
        "mainline",
        "lab",
    )
    assert (row.commit, row.describe, row.config_hash, row.target) == (
        "c0ffee",
        "v7.3",
        "cfg1",
        "qemu",
    )
    assert (row.accelerator, row.qemu_version, row.mbox_sha256) == ("kvm", "10.0.2", "m" * 64)
    assert (row.verdict, row.exit_code, row.complete) == ("FAIL", 1, True)
    assert row.started == "2025-01-01T02:00:00" and row.ended is not None
    assert row.counts == {"pass": 1, "fail": 1, "skip": 1}
    assert (tmp_path / history.DB_NAME).is_file()
    with history.opened(tmp_path / history.DB_NAME) as db:
        results = history_query.results_of(db, row)
    assert [(r.suite, r.name, r.outcome, r.reason) for r in results] == [
        ("kselftests", "a", P, ""),
        ("kselftests", "b", F, "boom"),
        ("gmem", "c", S, "no x"),
    ]


def test_missing_environment_keys_are_tolerated(tmp_path: Path) -> None:
    # A run that stopped before the build stage: only the kernel and config names.
    run = make_run(tmp_path, "r1", {}, started="2025-01-01T02:00:00", complete=False)
    summary = json.loads((run / "summary.json").read_text())
    summary["environment"] = {}
    (run / "summary.json").write_text(json.dumps(summary))
    row = history_record.record(tmp_path, run).run
    assert (row.commit, row.config_hash, row.identity, row.target) == (None, None, None, None)
    assert row.complete is False and row.exit_code == 2


def test_dirty_tree_identity_needs_its_diff_hash(tmp_path: Path) -> None:
    clean = make_run(tmp_path, "clean", {}, started="2025-01-01T01:00:00")
    edited = make_run(
        tmp_path, "edited", {}, started="2025-01-01T02:00:00", kernel_describe="v7.3-dirty"
    )
    hashed = make_run(
        tmp_path,
        "hashed",
        {},
        started="2025-01-01T03:00:00",
        kernel_dirty=True,
        kernel_diff_sha256="d1ff",
    )
    assert history_record.record(tmp_path, clean).run.identity == "c0ffee|cfg1|qemu"
    # Same commit, unknown edit: not the same kernel as the clean tree, nor any other.
    assert history_record.record(tmp_path, edited).run.identity is None
    assert history_record.record(tmp_path, hashed).run.identity == "c0ffee+d1ff|cfg1|qemu"


def test_import_walks_matrix_folders_and_is_idempotent(tmp_path: Path) -> None:
    root = tmp_path / "results"
    make_run(root, "solo", {("s", "t"): P}, started="2025-01-01T01:00:00")
    matrix = root / "matrix-nightly-20250102"
    for i, cell in enumerate(("mainline-lab-qemu", "series-lab-qemu")):
        make_run(matrix, cell, {("s", "t"): F}, started=f"2025-01-02T0{i}:00:00", cell=cell)
    (matrix / "matrix.json").write_text("{}")
    broken = root / "broken"
    broken.mkdir()
    (broken / "summary.json").write_text("{not json")
    db_path = root / history.DB_NAME

    with history.opened(db_path) as db:
        first = history_record.import_dirs(db, [root])
        assert first.count("new") == 3 and [p.name for p, _ in first.skipped] == ["broken"]
        again = history_record.import_dirs(db, [root, matrix / "series-lab-qemu"])
        assert again.count("unchanged") == 4 and again.count("new") == 0
        assert len(history_query.last_runs(db, 100)) == 3
        # results/latest is a symlink to a run: not followed, so not a second copy.
        assert (root / "latest").is_symlink()
        (run,) = history_query.runs_for_cell(db, "series-lab-qemu")
        assert run.counts == {"fail": 1}
        with pytest.raises(UserError, match="no such folder"):
            history_record.import_dirs(db, [root / "nope"])


def test_reimport_of_a_changed_summary_replaces_the_results(tmp_path: Path) -> None:
    run = make_run(tmp_path, "r1", {("s", "t"): P}, started="2025-01-01T01:00:00")
    assert history_record.record(tmp_path, run).status == "new"
    summary = json.loads((run / "summary.json").read_text())
    summary["results"][0]["outcome"] = "fail"
    (run / "summary.json").write_text(json.dumps(summary))
    again = history_record.record(tmp_path, run)
    assert again.status == "updated" and again.run.counts == {"fail": 1}
    with history.opened(tmp_path / history.DB_NAME) as db:
        assert len(history_query.last_runs(db)) == 1
        assert [r.outcome for r in history_query.results_of(db, again.run)] == [F]


def test_queries_order_and_identity_history(tmp_path: Path) -> None:
    for night, outcome in enumerate((P, F, P, F), start=1):
        make_run(tmp_path, f"n{night}", {("s", "t"): outcome}, started=f"2025-01-0{night}T03:00:00")
    # Another identity (a different config hash) does not mix in.
    make_run(tmp_path, "other", {("s", "t"): F}, started="2025-01-05T03:00:00", config_hash="cfg2")
    with history.opened(tmp_path / history.DB_NAME) as db:
        history_record.import_dirs(db, [tmp_path])
        assert [r.run_id for r in history_query.runs_for_cell(db, "mainline-lab-qemu", last=3)] == [
            "n3",
            "n4",
            "other",
        ]
        assert [r.run_id for r in history_query.last_runs(db, 2)] == ["other", "n4"]
        assert history_query.outcomes_by_identity(db, "c0ffee|cfg1|qemu") == {
            ("s", "t"): [P, F, P, F]
        }
        assert history_query.outcomes_by_identity(db, None) == {}
        assert history_query.cells(db) == ["mainline-lab-qemu"]


def test_resolve_run_by_id_key_and_folder(tmp_path: Path) -> None:
    root = tmp_path / "results"
    solo = make_run(root, "solo", {}, started="2025-01-01T01:00:00")
    nights = [
        make_run(root / f"matrix-{n}", "mainline-lab-qemu", {}, started=f"2025-01-0{n}T00:00:00")
        for n in (2, 3)
    ]
    with history.opened(root / history.DB_NAME) as db:
        # A folder is recorded on the way (idempotently).
        assert history_record.resolve_run(db, str(solo)).run_id == "solo"
        assert history_record.resolve_run(db, "solo").run_id == "solo"
        with pytest.raises(UserError, match="unknown run 'nope'") as err:
            history_record.resolve_run(db, "nope")
        assert "lab history list" in err.value.message
        history_record.import_dirs(db, nights)
        with pytest.raises(UserError, match="names 2 runs") as err:
            history_record.resolve_run(db, "mainline-lab-qemu")
        key = "mainline-lab-qemu@2025-01-03T00:00:00"
        assert key in err.value.message
        assert history_record.resolve_run(db, key).started == "2025-01-03T00:00:00"
        assert history_query.display_ref(db, history_record.resolve_run(db, key)) == key
        with pytest.raises(UserError, match="not a run folder"):
            history_record.resolve_run(db, str(root / "matrix-2"))


def test_only_the_history_module_opens_the_database() -> None:
    openers = [
        p.relative_to(HARNESS).as_posix()
        for p in HARNESS.rglob("*.py")
        if "sqlite3" in p.read_text()
    ]
    assert openers == ["history.py"]


def test_two_writers_share_the_database(tmp_path: Path) -> None:
    # Two `lab run`s finishing together: each records through its own connection.
    one = make_run(tmp_path, "one", {("s", "t"): P}, started="2025-01-01T01:00:00")
    two = make_run(tmp_path, "two", {("s", "t"): F}, started="2025-01-01T02:00:00")
    path = tmp_path / history.DB_NAME
    with history.opened(path) as first, history.opened(path) as second:
        history_record.record_run(first, one)
        history_record.record_run(second, two)
        assert [r.run_id for r in history_query.last_runs(first)] == ["two", "one"]
