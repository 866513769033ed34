"""The matrix: cells from lab.yaml, one run folder each, an index, worst exit wins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import config, matrix, matrix_grid, matrix_index, runner
from harness.errors import UserError
from tests.unit.matrix_lab import matrix_lab


def lab_with(tmp_path: Path, targets: tuple[str, ...] = ("qemu",)) -> config.LabConfig:
    return matrix_lab(
        tmp_path,
        {"lab": ["lab.config"], "debug": ["lab.config", "debug.config"]},
        {"kernels": ["a", "b"], "configs": ["lab", "debug"], "targets": list(targets)},
        hosts={"tdx-1": {"ssh": "tdx-1.example", "capabilities": ["tdx"]}},
    )


def fake_runs(codes: dict[str, list[int]]) -> tuple[matrix.RunCell, list[runner.RunRequest]]:
    seen: list[runner.RunRequest] = []

    def run_cell(lab: config.LabConfig, req: runner.RunRequest) -> int:
        seen.append(req)
        assert req.run_id is not None
        code = codes[req.cell.removesuffix("-qemu")].pop(0)
        folder = req.results_root / req.run_id
        folder.mkdir(parents=True)
        verdict = "PASS" if code == 0 else "FAIL"
        (folder / "summary.json").write_text(json.dumps({"verdict": verdict}))
        return code

    return run_cell, seen


def test_cells_are_the_product_in_order(tmp_path: Path) -> None:
    grid, suites = matrix_grid.cells(lab_with(tmp_path), "nightly")
    assert [c.name for c in grid] == [
        "a-lab-qemu",
        "a-debug-qemu",
        "b-lab-qemu",
        "b-debug-qemu",
    ]
    assert suites == ("s",)


def test_unknown_matrix_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown matrix 'weekly'"):
        matrix_grid.cells(lab_with(tmp_path), "weekly")


def test_host_targets_run_beside_the_vm(tmp_path: Path) -> None:
    lab = lab_with(tmp_path, targets=("qemu", "tdx-1"))
    seen: list[runner.RunRequest] = []

    def run_cell(lab: config.LabConfig, req: runner.RunRequest) -> int:
        seen.append(req)
        return 0

    assert matrix.run_matrix(lab, "nightly", tmp_path / "r", run_cell=run_cell) == 0
    got = [(r.run_id, r.target, r.cell) for r in seen[:2]]
    assert got == [("a-lab-qemu", "qemu", "a-lab-qemu"), ("a-lab-tdx-1", "tdx-1", "a-lab-tdx-1")]
    assert len(seen) == 8


def test_every_cell_runs_once_and_worst_exit_wins(tmp_path: Path) -> None:
    lab = lab_with(tmp_path)
    run_cell, seen = fake_runs({"a-lab": [0], "a-debug": [1], "b-lab": [2], "b-debug": [0]})
    code = matrix.run_matrix(lab, "nightly", tmp_path / "results", run_cell=run_cell)
    assert code == 2
    assert [r.run_id for r in seen] == ["a-lab-qemu", "a-debug-qemu", "b-lab-qemu", "b-debug-qemu"]
    (folder,) = (tmp_path / "results").iterdir()
    index = json.loads((folder / "matrix.json").read_text())
    assert index["exit_code"] == 2
    assert [r["verdict"] for r in index["runs"]] == ["PASS", "FAIL", "FAIL", "PASS"]
    assert (
        "| a-debug-qemu | 1 | FAIL | 1 | a-debug-qemu/report.md |"
        in (folder / "matrix.md").read_text()
    )


def test_repeat_gives_a_pass_rate(tmp_path: Path) -> None:
    lab = lab_with(tmp_path)
    run_cell, seen = fake_runs(
        {"a-lab": [0, 1], "a-debug": [0, 0], "b-lab": [0, 0], "b-debug": [1, 1]}
    )
    code = matrix.run_matrix(lab, "nightly", tmp_path / "r", repeat=2, run_cell=run_cell)
    assert code == 1
    assert seen[1].run_id == "a-lab-qemu-2"
    (folder,) = (tmp_path / "r").iterdir()
    rates = json.loads((folder / "matrix.json").read_text())["pass_rate"]
    assert rates == {"a-lab-qemu": 0.5, "a-debug-qemu": 1.0, "b-lab-qemu": 1.0, "b-debug-qemu": 0.0}


def test_combined_exit_precedence() -> None:
    assert matrix_index.combined_exit([0, 1, 2, 3]) == 3
    assert matrix_index.combined_exit([1, 2]) == 2
    assert matrix_index.combined_exit([0, 1]) == 1
    assert matrix_index.combined_exit([0, 0]) == 0
    assert matrix_index.combined_exit([]) == 0


def test_repeat_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--repeat 0"):
        matrix.run_matrix(lab_with(tmp_path), "nightly", tmp_path / "r", repeat=0)


def test_a_tree_path_replaces_the_matrix_kernels(tmp_path: Path) -> None:
    lab = lab_with(tmp_path)
    tree = tmp_path / "my tree, v1" / ".." / "my tree, v1" / "linux"
    seen: list[runner.RunRequest] = []

    def run_cell(lab_: config.LabConfig, req: runner.RunRequest) -> int:
        seen.append(req)
        assert req.run_id is not None
        (req.results_root / req.run_id).mkdir(parents=True)
        return 0

    results = tmp_path / "results"
    code = matrix.run_matrix(lab, "nightly", results, run_cell=run_cell, kernel=str(tree))
    assert code == 0
    assert [r.kernel for r in seen] == [str(tree), str(tree)]  # one per config
    for r in seen:
        assert r.run_id is not None and "/" not in r.run_id and " " not in r.run_id
        assert r.run_id.startswith("linux-") and r.run_id == r.cell
        assert (results / next(results.iterdir()).name / r.run_id).is_dir()
