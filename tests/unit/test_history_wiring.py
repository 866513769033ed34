"""Every run is recorded in the history right after its summary is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import history, history_query, history_record
from harness.config import SuiteSpec
from tests.unit import test_runner as tr
from tests.unit.fakes import Reply

SUITES = {"c": SuiteSpec(kind="command", argv=["true"])}


def test_a_run_is_recorded_with_its_identity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text(
        json.dumps({"source": {"kind": "path", "dirty": True, "diff_sha256": "d1ff"}})
    )
    h = tr.Harness(tmp_path, monkeypatch, tr.dmesg_then(lambda a: Reply(0), [tr.BEFORE]))
    h.build.manifest = manifest
    code, run_dir, out = h.run(tr.lab_with(tmp_path, SUITES), ("c",))
    assert code == 0, out
    with history.opened(tmp_path / "results" / history.DB_NAME) as db:
        (run,) = history_query.last_runs(db)
        assert run.folder == str(run_dir)
        assert run.target == "qemu" and run.dirty and run.diff_sha256 == "d1ff"
        assert run.identity == "0123456789ab+d1ff|cafe|qemu"
        assert [r.outcome.value for r in history_query.results_of(db, run)] == ["pass"]


def test_a_broken_history_is_a_warning_not_an_exit_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / history.DB_NAME).write_text("not a database, just text\n" * 100)
    h = tr.Harness(tmp_path, monkeypatch, tr.dmesg_then(lambda a: Reply(1), [tr.BEFORE]))
    code, run_dir, out = h.run(tr.lab_with(tmp_path, SUITES), ("c",))
    assert code == 1  # the test's failure, not the history's
    assert "[history] warning: this run is not in the history" in out
    assert "lab history import" in out
    assert json.loads((run_dir / "summary.json").read_text())["exit_code"] == 1


def test_history_root_is_where_the_database_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Path, Path]] = []
    monkeypatch.setattr(
        history_record, "record_or_warn", lambda root, run_dir, warn: calls.append((root, run_dir))
    )
    h = tr.Harness(tmp_path, monkeypatch, tr.dmesg_then(lambda a: Reply(0), [tr.BEFORE]))
    import io

    from harness import runner

    req = runner.RunRequest(
        kernel="mainline",
        config="lab",
        suites=("c",),
        results_root=tmp_path / "results" / "matrix-x",
        history_root=tmp_path / "results",
        run_id="mainline-lab-qemu",
    )
    runner.run(tr.lab_with(tmp_path, SUITES), req, runner.Progress(io.StringIO()))
    assert calls == [
        (tmp_path / "results", tmp_path / "results" / "matrix-x" / "mainline-lab-qemu")
    ]
    assert h.machines


def test_build_identity_reads_the_manifest(tmp_path: Path) -> None:
    m = tmp_path / "manifest.json"
    assert history_record.build_identity(m) == {}  # no file: nothing, no error
    m.write_text("{not json")
    assert history_record.build_identity(m) == {}
    m.write_text(json.dumps({"source": {"kind": "git", "dirty": False, "base": "d2ea4ff"}}))
    assert history_record.build_identity(m) == {
        "kernel_dirty": False,
        "kernel_source_kind": "git",
        "kernel_base": "d2ea4ff",
    }
    m.write_text(json.dumps({"source": {"kind": "mbox", "mbox": {"sha256": "ab" * 32}}}))
    assert history_record.build_identity(m)["mbox_sha256"] == "ab" * 32


def test_record_or_warn_survives_a_bug(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(root: Path, run_dir: Path) -> history_record.Recorded:
        raise RuntimeError("bug")

    monkeypatch.setattr(history_record, "record", boom)
    said: list[str] = []
    assert history_record.record_or_warn(tmp_path, tmp_path / "run", said.append) is None
    assert "RuntimeError: bug" in said[0] and f"lab history import {tmp_path / 'run'}" in said[0]
