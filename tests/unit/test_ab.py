"""lab run --ab: base then series, judged test by test; the report leads with it."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import pytest

from harness import ab, config, history_record, runner
from harness.compare import Group
from harness.config import LabConfig
from harness.errors import UserError
from harness.progress import Progress
from harness.results import Outcome, Recorder, TestResult
from tests.unit.outcomes import F, P, S

Plan = dict[tuple[str, str], Outcome]


class FakeRuns:
    """run_one for ab.run_ab: writes the run folder a real run would (summary, report)
    with a plan per kernel, and records it in the history like the runner's hook."""

    def __init__(self, plans: dict[str, Plan], complete: bool = True) -> None:
        self.plans = plans
        self.complete = complete
        self.requests: list[runner.RunRequest] = []

    def __call__(self, lab: LabConfig, req: runner.RunRequest, p: Progress) -> int:
        from harness import report

        self.requests.append(req)
        rec = Recorder(req.results_root, req.cell, run_id=req.run_id)
        commit = "c-" + req.kernel.replace("/", "_")
        rec.environment(
            kernel=req.kernel,
            config=req.config,
            kernel_commit=commit,
            config_hash="cfg",
            target="qemu",
        )
        for (suite, test), outcome in self.plans[req.kernel].items():
            rec.add(TestResult(suite, test, outcome, reason="why" if outcome is not P else ""))
        record = rec.finish(self.complete)
        report.render(record, rec.root)
        history_record.record_or_warn(req.history_root or req.results_root, rec.root, p.say)
        return record.exit_code


def request(tmp_path: Path, kernel: str = "series") -> runner.RunRequest:
    return runner.RunRequest(
        kernel=kernel, config="lab", suites=("gmem-ioctl",), results_root=tmp_path / "results"
    )


@pytest.fixture
def lab() -> LabConfig:
    return config.load()


BASE: Plan = {
    ("gmem-ioctl", "a"): P,
    ("gmem-ioctl", "b"): P,
    ("gmem-ioctl", "old_bug"): F,
    ("gmem-ioctl", "feature"): S,
}


def test_a_regression_leads_the_series_report_and_exits_1(tmp_path: Path, lab: LabConfig) -> None:
    series = {**BASE, ("gmem-ioctl", "b"): F}
    runs = FakeRuns({"mainline": BASE, "series": series})
    out = io.StringIO()
    code = ab.run_ab(lab, request(tmp_path), "mainline", Progress(out), runs)
    assert code == 1
    base_req, series_req = runs.requests
    assert base_req.kernel == "mainline" and series_req.kernel == "series"
    assert base_req.config == series_req.config and base_req.suites == series_req.suites
    assert base_req.run_id == f"{series_req.run_id}-base"
    latest = (tmp_path / "results" / "latest").resolve()
    assert latest.name == series_req.run_id  # the series is the run people open
    md = (latest / "report.md").read_text()
    first = md[md.index("\n## ") :].splitlines()[1]
    assert first.startswith("## Comparison: base mainline")
    section = md[md.index("## Comparison") : md.index("## Failures")]
    assert "### Regressions (1)" in section and "| gmem-ioctl | b | pass | fail |" in section
    assert "### Pre-existing failures (1)" in section and "old_bug" in section
    assert "A/B against mainline: 1 regression (gmem-ioctl/b)" in md.split("## ")[0]
    html = (latest / "report.html").read_text()
    assert html.index("Regressions (1)") < html.index("<h2>Failures</h2>")
    data = json.loads((latest / ab.AB_JSON).read_text())
    assert data["regressions"] == [["gmem-ioctl", "b"]]
    assert data["pre_existing"] == [["gmem-ioctl", "old_bug"]]
    assert data["base"]["run_id"] == base_req.run_id and data["exit_code"] == 1
    assert "REGRESSION gmem-ioctl / b: pass on the base, fail on the series" in out.getvalue()


def test_failing_on_both_is_pre_existing_and_exits_0(tmp_path: Path, lab: LabConfig) -> None:
    runs = FakeRuns({"mainline": BASE, "series": dict(BASE)})
    code = ab.run_ab(lab, request(tmp_path), "mainline", Progress(io.StringIO()), runs)
    assert code == 0  # the series run itself exits 1 (old_bug), the A/B does not
    latest = (tmp_path / "results" / "latest").resolve()
    md = (latest / "report.md").read_text()
    assert "A/B against mainline: 1 pre-existing failure (fail on both)" in md
    assert "Regressions" not in md


def test_a_new_failing_test_fails_the_ab(tmp_path: Path, lab: LabConfig) -> None:
    series = {**BASE, ("conversions", "sub-run 1"): F}
    runs = FakeRuns({"mainline": BASE, "series": series})
    assert ab.run_ab(lab, request(tmp_path), "mainline", Progress(io.StringIO()), runs) == 1
    latest = (tmp_path / "results" / "latest").resolve()
    assert "### New failing tests (1)" in (latest / "report.md").read_text()


def test_an_infrastructure_failure_on_one_side_is_exit_2(tmp_path: Path, lab: LabConfig) -> None:
    runs = FakeRuns({"mainline": BASE, "series": dict(BASE)}, complete=False)
    assert ab.run_ab(lab, request(tmp_path), "mainline", Progress(io.StringIO()), runs) == 2


def test_the_series_own_base_from_lab_yaml(lab: LabConfig) -> None:
    base = ab.resolve_base(lab, "series", "")
    assert base.kernel == "series-base"
    spec = base.lab.kernels["series-base"].git
    series = lab.kernels["series"].git
    assert spec is not None and series is not None
    assert spec.ref == series.base and spec.url == series.url and spec.base is None
    assert "series-base" not in lab.kernels  # the lab itself is untouched


def test_bad_bases_are_user_errors(lab: LabConfig, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="has no base"):
        ab.resolve_base(lab, "mainline", "")
    with pytest.raises(UserError, match="compared with itself"):
        ab.resolve_base(lab, "mainline", "mainline")
    with pytest.raises(UserError, match="unknown kernel"):
        ab.resolve_base(lab, "series", "nope")
    assert ab.resolve_base(lab, "series", str(tmp_path)).kernel == str(tmp_path)


def test_the_flaky_rules_apply_over_the_series_history(tmp_path: Path, lab: LabConfig) -> None:
    # The series kernel failed b before and passed it too: its failure now is flaky.
    flaky_plans: list[Plan] = [{**BASE, ("gmem-ioctl", "b"): F}, dict(BASE)]
    for i, plan in enumerate(flaky_plans):
        earlier = dataclasses.replace(request(tmp_path), run_id=f"earlier-{i}")
        FakeRuns({"series": plan})(lab, earlier, Progress(io.StringIO()))
    runs = FakeRuns({"mainline": BASE, "series": {**BASE, ("gmem-ioctl", "b"): F}})
    code = ab.run_ab(lab, request(tmp_path), "mainline", Progress(io.StringIO()), runs)
    assert code == 0
    data: dict[str, Any] = json.loads(
        ((tmp_path / "results" / "latest").resolve() / ab.AB_JSON).read_text()
    )
    assert data["flaky"] == [["gmem-ioctl", "b"]] and data["regressions"] == []


def test_verdict_headline_lists_at_most_five() -> None:
    from harness import compare

    a = [TestResult("s", f"t{i}", P) for i in range(7)]
    b = [TestResult("s", f"t{i}", F) for i in range(7)]
    v = ab.verdict(compare.compare(a, b), 0, 1, "mainline")
    assert v.exit_code == 1 and "7 regressions" in v.headline and "and 2 more" in v.headline
    assert v.comparison.count(Group.REGRESSION) == 7


def test_cli_run_ab_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness import cli

    seen: dict[str, Any] = {}

    def fake(lab: LabConfig, req: runner.RunRequest, base: str, p: Progress) -> int:
        seen.update(kernel=req.kernel, base=base, suites=req.suites)
        return 0

    monkeypatch.setattr(ab, "run_ab", fake)
    argv = ["run", "--kernel", "series", "--suites", "gmem-ioctl", "--results", str(tmp_path)]
    assert cli.main([*argv, "--ab"]) == 0
    assert seen == {"kernel": "series", "base": "", "suites": ("gmem-ioctl",)}
    assert cli.main([*argv, "--ab", "mainline"]) == 0 and seen["base"] == "mainline"
