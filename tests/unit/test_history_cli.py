"""lab history import/list and lab compare from the command line: output, exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import cli
from tests.unit.outcomes import F, P, S

from .runfolders import Plan, make_run


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A clean run and a run of an edited tree that breaks one test."""
    results = tmp_path / "results"
    plan: Plan = {("gmem", "t1"): P, ("gmem", "t2"): P, ("gmem", "t3"): (S, "no feature")}
    make_run(results, "clean", plan, started="2025-01-01T01:00:00")
    broken: Plan = {**plan, ("gmem", "t2"): (F, "EINVAL")}
    make_run(
        results,
        "broken",
        broken,
        started="2025-01-01T02:00:00",
        kernel_describe="v7.3-dirty",
        kernel_dirty=True,
        kernel_diff_sha256="d1ff",
    )
    return results


def lab(*argv: str) -> int:
    return cli.main(list(argv))


def test_import_then_list(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert lab("history", "import", str(root), "--results", str(root)) == 0
    assert "2 runs in" in capsys.readouterr().out
    assert lab("history", "import", str(root), "--results", str(root)) == 0
    assert "0 new, 0 updated, 2 unchanged" in capsys.readouterr().out
    assert lab("history", "list", "--results", str(root), "--last", "1") == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and out[2].startswith("| broken | 2025-01-01T02:00:00 |")
    assert lab("history", "list", "--results", str(root), "--cell", "nope") == 3
    assert "known cells: mainline-lab-qemu" in capsys.readouterr().err


def test_import_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert lab("history", "import", str(tmp_path / "nope"), "--results", str(tmp_path)) == 3
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "summary.json").write_text("{")
    assert lab("history", "import", str(tmp_path), "--results", str(tmp_path)) == 2
    assert "skipped" in capsys.readouterr().err


def test_list_of_an_empty_history(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert lab("history", "list", "--results", str(tmp_path)) == 0
    assert "lab history import" in capsys.readouterr().out


def test_compare_a_planted_regression(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Folders work without an import: they are recorded on the way.
    code = lab("compare", str(root / "clean"), str(root / "broken"), "--results", str(root))
    assert code == 1
    out = capsys.readouterr().out
    assert "**REGRESSED** (exit 1)" in out and "| gmem | t2 | pass | fail | EINVAL |" in out
    # Nothing else is listed: the other tests did not change.
    assert "1 regression · 2 unchanged" in out
    folder = root / "compare-clean-broken"
    assert (folder / "compare.md").read_text() == out
    assert (folder / "compare.html").is_file()
    # The other way round it is a fix, and ids work now that both are recorded.
    out_dir = root / "elsewhere"
    assert lab("compare", "broken", "clean", "--results", str(root), "--out", str(out_dir)) == 0
    assert "### Fixes (1)" in capsys.readouterr().out and (out_dir / "compare.md").is_file()


def test_compare_bad_input_exits_3(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lab("history", "import", str(root), "--results", str(root))
    capsys.readouterr()
    cases = [
        (["clean", "nope"], "unknown run 'nope'"),
        (["clean"], "takes two runs"),
        (["clean", "clean"], "the same run"),
        (["clean", "broken", "--cell", "mainline-lab-qemu"], "not both"),
        (["--cell", "nope"], "no runs of cell 'nope'"),
        (["--cell", "mainline-lab-qemu", "--last", "3"], "has 2 recorded run(s)"),
        (["--cell", "mainline-lab-qemu", "--last", "1"], "2 runs at least"),
        (["clean", "broken", "--last", "2"], "--last goes with --cell"),
        ([str(root.parent)], "takes two runs"),
        ([str(root.parent), "clean"], "not a run folder"),
    ]
    for argv, said in cases:
        assert lab("compare", *argv, "--results", str(root)) == 3, argv
        err = capsys.readouterr().err
        assert said in err and "Traceback" not in err, (argv, err)
    lab("compare", "clean", "nope", "--results", str(root))
    assert "lab history list" in capsys.readouterr().err


def test_compare_last_two_of_a_cell_with_a_flaky_test(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Five nights of the same kernel; one test fails on nights 2 and 5, another always.
    results = tmp_path / "results"
    for night in range(1, 6):
        flaky = F if night in (2, 5) else P
        steady = F if night == 5 else P
        plan = {("cmd", "flaky"): flaky, ("cmd", "always"): F, ("cmd", "steady"): steady}
        make_run(results, f"n{night}", plan, started=f"2025-01-0{night}T03:00:00")
    assert lab("history", "import", str(results), "--results", str(results)) == 0
    capsys.readouterr()
    # Night 5 against night 4: same identity, so the new failures are flakiness, with
    # their rate; the test that failed every night is pre-existing, not flaky.
    code = lab("compare", "--cell", "mainline-lab-qemu", "--results", str(results))
    out = capsys.readouterr().out
    assert code == 0, out
    assert "| cmd | flaky | pass | fail | 3/5 (60%) on B's identity |" in out
    assert "| cmd | steady | pass | fail | 4/5 (80%) on B's identity |" in out
    assert "### Pre-existing failures (1)" in out and "| cmd | always | fail | fail |" in out
    assert "### Regressions" not in out
    assert (results / "compare-n4-n5" / "compare.html").is_file()


def test_compare_writes_no_traceback_when_the_database_is_broken(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (root / "history.sqlite").write_bytes(b"garbage" * 500)
    assert lab("compare", "clean", "broken", "--results", str(root)) == 2
    err = capsys.readouterr().err
    assert "cannot open the run history" in err and "Traceback" not in err
