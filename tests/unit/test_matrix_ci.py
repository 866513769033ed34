"""The matrix as a CI sees it: `lab matrix --list` (one code path for both pipelines)
and `lab matrix-report` merging cell run folders made by separate jobs."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness import cli, config, junit, matrix_grid, matrix_merge
from harness.commands.matrix import listing
from harness.errors import UserError
from harness.paths import REPO_ROOT
from harness.results import Outcome, Recorder, TestResult
from tests.unit.test_matrix import lab_with


def test_list_has_one_entry_per_cell_with_its_build(tmp_path: Path) -> None:
    entries = matrix_grid.cell_list(lab_with(tmp_path), "nightly")
    assert [(e.cell, e.kernel, e.config, e.target, e.build_key) for e in entries] == [
        ("a-lab-qemu", "a", "lab", "qemu", "a-lab"),
        ("a-debug-qemu", "a", "debug", "qemu", "a-debug"),
        ("b-lab-qemu", "b", "lab", "qemu", "b-lab"),
        ("b-debug-qemu", "b", "debug", "qemu", "b-debug"),
    ]
    assert all(e.suites == ("s",) for e in entries)


def test_a_checkout_replaces_the_matrix_kernels(tmp_path: Path) -> None:
    lab = lab_with(tmp_path)
    entries = matrix_grid.cell_list(lab, "nightly", kernel="/builds/group/linux")
    assert [e.cell for e in entries] == ["linux-lab-qemu", "linux-debug-qemu"]
    assert {e.kernel for e in entries} == {"/builds/group/linux"}
    named = matrix_grid.cell_list(lab, "nightly", "/k", label="checkout")
    assert [e.build_key for e in named] == ["checkout-lab", "checkout-debug"]
    with pytest.raises(UserError, match="not a safe name"):
        matrix_grid.cell_list(lab, "nightly", "/k", label="../evil")


def test_cells_that_share_a_build_share_its_key() -> None:
    entries = [
        matrix_grid.CellEntry("k-lab-qemu", "k", "lab", "qemu", "k-lab", ("s",)),
        matrix_grid.CellEntry("k-lab-tdx-1", "k", "lab", "tdx-1", "k-lab", ("s",)),
        matrix_grid.CellEntry("k-debug-qemu", "k", "debug", "qemu", "k-debug", ("s",)),
    ]
    assert matrix_grid.builds_of(entries) == [
        {"build_key": "k-lab", "kernel": "k", "config": "lab"},
        {"build_key": "k-debug", "kernel": "k", "config": "debug"},
    ]


def test_list_formats_come_from_one_list(tmp_path: Path) -> None:
    entries = matrix_grid.cell_list(lab_with(tmp_path), "nightly")
    as_json = json.loads(listing(entries, "json"))
    assert as_json[0] == {
        "cell": "a-lab-qemu",
        "kernel": "a",
        "config": "lab",
        "target": "qemu",
        "build_key": "a-lab",
        "suites": ["s"],
    }
    out = dict(line.split("=", 1) for line in listing(entries, "github-output").splitlines())
    assert json.loads(out["cells"]) == as_json
    assert [b["build_key"] for b in json.loads(out["builds"])] == [e.build_key for e in entries]
    text = listing(entries, "text")
    assert "a-debug-qemu" in text and text.endswith("4 cells, 4 builds; suites: s")


def test_the_real_lab_yaml_lists_through_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["matrix", "nightly", "--list", "--format", "json", "--kernel", "/src/linux"])
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    lab = config.load(REPO_ROOT / "lab.yaml")
    assert [r["config"] for r in rows] == lab.matrix["nightly"].configs
    assert len({r["build_key"] for r in rows}) == len(rows)


# --- matrix-report -------------------------------------------------------------------


def cell_run(root: Path, cell: str, outcomes: list[Outcome], run_id: str = "run1") -> Path:
    """A finished run folder as `lab run --results root` leaves it (latest link included)."""
    rec = Recorder(root, cell, run_id=run_id)
    for i, outcome in enumerate(outcomes):
        rec.add(TestResult("gmem-ioctl", f"test_{i}", outcome, reason=outcome.value))
    record = rec.finish(complete=True)
    junit.write(record.results, rec.root / "junit.xml", cell)
    return rec.root


def test_report_merges_cells_into_one_verdict_and_one_junit(tmp_path: Path) -> None:
    results = tmp_path / "results"
    cell_run(results / "linux-lab-qemu", "x-lab-qemu", [Outcome.PASS, Outcome.SKIP])
    cell_run(results / "linux-debug-qemu", "x-debug-qemu", [Outcome.PASS, Outcome.CRASH])
    expected = matrix_grid.cell_list(lab_with(tmp_path), "nightly", "/b/linux")
    expected.append(matrix_grid.CellEntry("linux-tdx-qemu", "/b/linux", "tdx", "qemu", "t", ()))
    out = tmp_path / "report"
    code = matrix_merge.merge_report([results], out, "ci", expected)
    # A cell with no run is missing (2), which outranks the crash (1).
    assert code == 2
    index = json.loads((out / "matrix.json").read_text())
    assert [(r["cell"], r["exit_code"]) for r in index["runs"]] == [
        ("linux-debug-qemu", 1),
        ("linux-lab-qemu", 0),
        ("linux-tdx-qemu", 2),
    ]
    assert index["runs"][1]["folder"] == "../results/linux-lab-qemu/run1"
    md = (out / "matrix.md").read_text()
    assert "verdict: **ERROR** (exit 2)" in md
    assert "| linux-tdx-qemu | 1 | ERROR: no results (its job did not finish) | 2 | none |" in md
    root = ET.parse(out / "junit.xml").getroot()
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("5", "1", "1")
    assert root.get("skipped") == "1"
    names = [s.get("name") for s in root.iter("testsuite")]
    assert names == ["x-debug-qemu.gmem-ioctl", "x-lab-qemu.gmem-ioctl", "linux-tdx-qemu"]


def test_report_counts_each_run_once_and_orders_attempts(tmp_path: Path) -> None:
    results = tmp_path / "r"
    cell_run(results, "c-lab-qemu", [Outcome.ERROR], run_id="20260101-000000-00001")
    second = cell_run(results, "c-lab-qemu", [Outcome.PASS], run_id="20260101-000001-00002")
    assert (results / "latest").is_symlink()
    # The same folder twice (and through the latest link) is still one run.
    code = matrix_merge.merge_report([results, second], tmp_path / "o", "ci")
    index = json.loads((tmp_path / "o" / "matrix.json").read_text())
    assert [(r["attempt"], r["exit_code"]) for r in index["runs"]] == [(1, 2), (2, 0)]
    assert index["pass_rate"] == {"c-lab-qemu": 0.5}
    assert code == 2


def test_report_refuses_what_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such folder"):
        matrix_merge.merge_report([tmp_path / "nope"], tmp_path / "o", "ci")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "summary.json").write_text("{not json")
    with pytest.raises(UserError, match="not a gmemlab summary"):
        matrix_merge.merge_report([bad], tmp_path / "o", "ci")


def test_an_unreadable_cell_junit_is_an_error_case(tmp_path: Path) -> None:
    run = cell_run(tmp_path / "r", "c-lab-qemu", [Outcome.PASS])
    (run / "junit.xml").write_text("<testsuites><broken")
    matrix_merge.merge_report([run], tmp_path / "o", "ci")
    root = ET.parse(tmp_path / "o" / "junit.xml").getroot()
    (suite,) = root.iter("testsuite")
    assert suite.get("name") == "c-lab-qemu" and root.get("errors") == "1"


def test_matrix_report_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    cell_run(results / "linux-lab-qemu", "linux-lab-qemu", [Outcome.PASS])
    expect = tmp_path / "cells.json"
    entry = matrix_grid.CellEntry("linux-lab-qemu", "/b/linux", "lab", "qemu", "linux-lab", ("s",))
    expect.write_text(json.dumps([entry.to_json()]))
    out = tmp_path / "report"
    argv = ["matrix-report", str(results), "--out", str(out), "--expect", str(expect)]
    assert cli.main(argv) == 0
    assert "verdict: **PASS** (exit 0)" in capsys.readouterr().out
    expect.write_text('{"cells": 1}')
    assert cli.main(argv) == 3
    assert "not the JSON of `lab matrix --list`" in capsys.readouterr().err
