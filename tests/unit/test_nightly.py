"""The nightly matrix page from the history: night-over-night regressions, flaky tests
with their rate, each cell's strip and pass rate over time, matrix --ab."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from harness import config, history_record, matrix, matrix_index, nightly, report, runner
from harness.history_report import rate_sparkline_svg
from harness.results import Outcome, Recorder, TestResult
from tests.unit.matrix_lab import matrix_lab
from tests.unit.outcomes import F, P

Plan = dict[str, Outcome]
# (cell, attempt) -> the outcome of each test of the suite "s"
Planner = Callable[[str, int], Plan]


def lab_with(tmp_path: Path, kernels: tuple[str, ...] = ("a",)) -> config.LabConfig:
    nightly = {"kernels": list(kernels), "configs": ["lab"], "targets": ["qemu"]}
    return matrix_lab(tmp_path, {"lab": ["lab.config"]}, nightly)


class Nights:
    """run_cell for run_matrix: a real run folder per run, recorded like the runner
    does; the commit (the identity) and the outcomes come from the test's plan."""

    # The night each instance stands for: run keys (id@started) differ night to night.
    night = 0

    def __init__(self, planner: Planner, commit: str = "c1") -> None:
        self.planner = planner
        self.commit = commit
        self.attempts: dict[str, int] = {}
        Nights.night += 1
        self.day = Nights.night
        self.n = 0

    def __call__(self, lab: config.LabConfig, req: runner.RunRequest) -> int:
        assert req.run_id is not None and req.history_root is not None
        cell = req.cell
        self.attempts[cell] = self.attempts.get(cell, 0) + 1
        rec = Recorder(req.results_root, cell, run_id=req.run_id)
        rec.environment(
            kernel=req.kernel,
            config=req.config,
            kernel_commit=f"{self.commit}-{req.kernel}",
            config_hash="cfg",
            target=req.target,
        )
        for test, outcome in self.planner(cell, self.attempts[cell]).items():
            rec.add(TestResult("s", test, outcome, reason="" if outcome is P else "why"))
        self.n += 1
        rec.record.started = f"2026-01-{self.day:02d}T02:00:{self.n:02d}"
        record = rec.finish(True)
        report.render(record, rec.root)
        history_record.record_or_warn(req.history_root, rec.root, print)
        return record.exit_code


def night(lab: config.LabConfig, root: Path, planner: Planner, **kw: object) -> tuple[int, Path]:
    run_cell = Nights(planner, str(kw.pop("commit", "c1")))
    code = matrix.run_matrix(lab, "nightly", root, run_cell=run_cell, **kw)  # type: ignore[arg-type]
    folder = sorted(root.glob("matrix-nightly-*"), key=lambda p: p.stat().st_mtime)[-1]
    return code, folder


def test_night_over_night_regression_is_flagged(tmp_path: Path) -> None:
    lab, root = lab_with(tmp_path), tmp_path / "results"
    code1, first = night(lab, root, lambda c, a: {"t1": P, "t2": P})
    assert code1 == 0
    md1 = (first / "matrix.md").read_text()
    assert "None (no earlier runs of these cells in the history)." in md1
    code2, second = night(lab, root, lambda c, a: {"t1": P, "t2": F}, commit="c2")
    assert code2 == 1 and second != first
    md = (second / "matrix.md").read_text()
    regressions = md[md.index("## Night-over-night") : md.index("## Failing in the latest")]
    assert "### a-lab-qemu: 1 regression since a-lab-qemu" in regressions
    assert "| s | t2 | pass | fail |" in regressions and "t1" not in regressions
    assert "| a-lab-qemu | `PF` | 50% (1/2) | 100% 50% |" in md
    index = json.loads((second / "matrix.json").read_text())
    assert index["nightly"]["a-lab-qemu"]["regressions"] == [["s", "t2"]]
    html = (second / "matrix.html").read_text()
    assert html.count('<svg xmlns="http://www.w3.org/2000/svg" class="strip"') == 1
    assert html.count('class="spark"') == 1 and "Regressions (1)" in html
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")


def test_flaky_with_repeat_is_flaky_with_its_rate_not_a_regression(tmp_path: Path) -> None:
    lab, root = lab_with(tmp_path), tmp_path / "results"
    night(lab, root, lambda c, a: {"t1": P, "coin": P})
    # Tonight: the same commit six times; coin fails on attempts 2 and 6.
    code, folder = night(
        lab, root, lambda c, a: {"t1": P, "coin": F if a in (2, 6) else P}, repeat=6
    )
    md = (folder / "matrix.md").read_text()
    regressions = md[md.index("## Night-over-night") : md.index("## Failing in the latest")]
    assert "coin" not in regressions and "None: no cell lost a test" in regressions
    flaky = md[md.index("## Flaky tests") : md.index("## Cells over")]
    # Over every run of the identity: last night's pass and tonight's six.
    assert "| a-lab-qemu | s | coin | passed 5 of 7 runs (71%) |" in flaky
    failing = md[md.index("## Failing in the latest") : md.index("## Flaky tests")]
    assert "| a-lab-qemu | s | coin | fail | flaky: passed 5 of 7 runs (71%) |" in failing
    assert code == 1  # the runs themselves failed; the page says why (flaky)
    index = json.loads((folder / "matrix.json").read_text())
    assert index["nightly"]["a-lab-qemu"]["flaky"] == [
        {"suite": "s", "test": "coin", "passes": 5, "runs": 7}
    ]
    assert index["pass_rate"]["a-lab-qemu"] == pytest.approx(4 / 6)


def test_a_consistent_failure_is_never_hidden_by_flakiness(tmp_path: Path) -> None:
    lab, root = lab_with(tmp_path), tmp_path / "results"
    # Last night's commit was flaky on coin; tonight's fails it every time.
    night(lab, root, lambda c, a: {"coin": F if a == 1 else P}, repeat=3)
    _, folder = night(lab, root, lambda c, a: {"coin": F}, repeat=3, commit="c2")
    md = (folder / "matrix.md").read_text()
    regressions = md[md.index("## Night-over-night") : md.index("## Failing in the latest")]
    assert "| s | coin | pass | fail |" in regressions
    assert "failed in all 3 runs of B's identity" in regressions
    failing = md[md.index("## Failing in the latest") : md.index("## Flaky tests")]
    assert "| a-lab-qemu | s | coin | fail | no |" in failing


def test_matrix_ab_judges_other_kernels_against_the_base(tmp_path: Path) -> None:
    lab, root = lab_with(tmp_path, ("b", "a")), tmp_path / "results"
    plans = {"a-lab-qemu": {"t1": P, "old": F}, "b-lab-qemu": {"t1": F, "old": F}}
    run_cell = Nights(lambda c, a: plans[c])
    code = matrix.run_matrix(lab, "nightly", root, run_cell=run_cell, ab_base="a")
    assert code == 1  # b regressed t1; a's own failure (old) is pre-existing
    (folder,) = root.glob("matrix-nightly-*")
    index = json.loads((folder / "matrix.json").read_text())
    assert [r["cell"] for r in index["runs"]] == ["a-lab-qemu", "b-lab-qemu"]  # base first
    (row,) = index["ab"]
    assert row["cell"] == "b-lab-qemu" and row["base_run"] == "a-lab-qemu"
    assert row["exit_code"] == 1 and "1 regression (s/t1)" in row["headline"]
    b_report = (folder / "b-lab-qemu" / "report.md").read_text()
    assert b_report[b_report.index("\n## ") + 1 :].startswith("## Comparison: base a")
    plans["b-lab-qemu"] = {"t1": P, "old": F}
    code = matrix.run_matrix(
        lab, "nightly", root, run_cell=Nights(lambda c, a: plans[c]), ab_base="a"
    )
    assert code == 0


def test_matrix_ab_runs_a_base_outside_the_grid_once(tmp_path: Path) -> None:
    lab, root = lab_with(tmp_path, ("b",)), tmp_path / "results"
    run_cell = Nights(lambda c, a: {"t1": P})
    code = matrix.run_matrix(lab, "nightly", root, repeat=2, run_cell=run_cell, ab_base="a")
    assert code == 0
    assert run_cell.attempts == {"b-lab-qemu": 2, "a-lab-qemu": 1}
    (folder,) = root.glob("matrix-nightly-*")
    assert (folder / "a-lab-qemu-base" / "summary.json").is_file()


def test_no_history_no_nightly_section(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    done = [matrix_index.CellRun("a-lab-qemu", 1, 0, "PASS", "a-lab-qemu")]
    matrix_index.write_index(folder, "nightly", done)
    md = (folder / "matrix.md").read_text()
    assert "Night-over-night" not in md and "| a-lab-qemu | 1 | PASS | 0 |" in md
    assert nightly.view(tmp_path, {"a-lab-qemu": [folder]}) is None


def test_sparkline_is_valid_svg_with_gaps() -> None:
    svg = rate_sparkline_svg([1.0, 0.5, None, 0.75], ["n1", "n2", "n3", "n4 <x>"], label="a & b")
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert len(root.findall(f"{ns}circle")) == 3
    assert len(root.findall(f"{ns}polyline")) == 1  # the gap ends the first line
    titles = [t.text for t in root.iter(f"{ns}title")]
    assert "a & b" in titles and "n4 <x>: 75% of tests passed" in titles
    assert ET.fromstring(rate_sparkline_svg([])) is not None


def test_flaky_on_the_previous_commit_is_still_said(tmp_path: Path) -> None:
    lab, root = lab_with(tmp_path), tmp_path / "results"
    night(lab, root, lambda c, a: {"coin": F if a == 2 else P}, repeat=3)
    _, folder = night(lab, root, lambda c, a: {"coin": P}, commit="c2")
    md = (folder / "matrix.md").read_text()
    flaky = md[md.index("## Flaky tests") : md.index("## Cells over")]
    assert "| a-lab-qemu | s | coin | passed 2 of 3 runs (67%) of the previous commit |" in flaky


def test_cli_matrix_ab_and_nights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness import cli

    seen: dict[str, object] = {}

    def fake(lab: config.LabConfig, name: str, root: Path, **kw: object) -> int:
        seen.update(kw, name=name)
        return 0

    monkeypatch.setattr(matrix, "run_matrix", fake)
    assert cli.main(["matrix", "nightly", "--ab", "--nights", "5", "--results", str(tmp_path)]) == 0
    assert seen == {"name": "nightly", "repeat": 1, "ab_base": "", "nights": 5, "kernel": None}
    assert cli.main(["matrix", "nightly", "--ab", "mainline", "--results", str(tmp_path)]) == 0
    assert seen["ab_base"] == "mainline" and seen["nights"] == nightly.DEFAULT_NIGHTS
    monkeypatch.undo()
    lab = lab_with(tmp_path)
    with pytest.raises(Exception, match="--nights 0"):
        matrix.run_matrix(lab, "nightly", tmp_path / "r", nights=0)
