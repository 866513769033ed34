"""LabRunner, the real MutantRunner, against a fake `lab` CLI: results per suite from
summary.json, a tree that does not build, machine trouble, a crash while booting, a
VM that never came up, and the deadline (SIGTERM to the child's group first)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from harness.mutate.classify import BOOT
from harness.mutate.engine import Broken, InfraFailure
from harness.mutate.labrunner import LabRunner
from harness.paths import REPO_ROOT
from harness.results import Outcome

FAKE_LAB = Path(__file__).with_name("fake_lab.py")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    path = tmp_path / "tree"
    path.mkdir()
    (path / "MODE").write_text("ok\n")
    return path


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LabRunner:
    # The fake imports harness: run it from the repository like `python -m harness.cli`.
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return LabRunner(
        config="lab",
        out_dir=tmp_path / "attempts",
        lab_argv=(sys.executable, str(FAKE_LAB)),
        grace_s=10,
    )


def test_results_per_suite_from_summary(runner: LabRunner, tree: Path) -> None:
    (tree / "FAIL-kselftests").touch()
    got = runner.run(tree, ["gmem-ioctl", "kselftests"], 60, label="abc123-1")
    assert isinstance(got, dict)
    assert [r.outcome for r in got["gmem-ioctl"]] == [Outcome.PASS]
    assert [r.outcome for r in got["kselftests"]] == [Outcome.FAIL]
    assert got["kselftests"][0].reason == "assert 0 == 22"
    attempt = runner.out_dir / "abc123-1" / "1"
    assert (attempt / "build.out").read_text().strip().endswith("manifest.json")
    assert (attempt / "results" / "latest" / "summary.json").is_file()
    timing = json.loads((runner.out_dir / "timings.jsonl").read_text().splitlines()[-1])
    assert timing["label"] == "abc123-1" and timing["stages"]["boot"] == 8.0
    # A second attempt of the same label gets its own folder.
    runner.run(tree, ["gmem-ioctl"], 60, label="abc123-1")
    assert (runner.out_dir / "abc123-1" / "2" / "results").is_dir()


def test_the_suite_timeout_cap_reaches_lab_run(tmp_path: Path, tree: Path) -> None:
    capped = LabRunner(
        config="lab",
        out_dir=tmp_path / "capped",
        lab_argv=(sys.executable, str(FAKE_LAB)),
        suite_timeout_s=90,
    )
    assert isinstance(capped.run(tree, ["gmem-ioctl"], 60, label="cap-1"), dict)
    sent = capped.out_dir / "cap-1" / "1" / "results" / "suite-timeout.txt"
    assert sent.read_text() == "90\n"


def test_a_link_error_is_broken_and_a_full_disk_is_infrastructure(
    runner: LabRunner, tree: Path
) -> None:
    (tree / "MODE").write_text("broken\n")
    got = runner.run(tree, ["gmem-ioctl"], 60, label="m-1")
    assert isinstance(got, Broken) and "undefined reference" in got.reason
    (tree / "MODE").write_text("machine\n")
    got = runner.run(tree, ["gmem-ioctl"], 60, label="m-2")
    assert isinstance(got, InfraFailure) and got.stage == "build"
    assert "lab: build: kernel failed" in got.reason


def test_a_crash_while_booting_is_the_kernels_and_a_silent_vm_is_not(
    runner: LabRunner, tree: Path
) -> None:
    (tree / "MODE").write_text("boot-crash\n")
    got = runner.run(tree, ["gmem-ioctl"], 60, label="m-1")
    assert isinstance(got, dict)
    assert [(r.suite, r.outcome) for r in got[BOOT]] == [(BOOT, Outcome.CRASH)]
    assert "gmem-ioctl" not in got
    (tree / "MODE").write_text("no-boot\n")
    got = runner.run(tree, ["gmem-ioctl"], 60, label="m-2")
    assert isinstance(got, InfraFailure) and got.stage == "boot"
    assert "no SSH banner" in got.reason


def test_the_deadline_stops_lab_run_with_sigterm(runner: LabRunner, tree: Path) -> None:
    (tree / "MODE").write_text("hang\n")
    got = runner.run(tree, ["gmem-ioctl"], 4, label="m-1")
    assert isinstance(got, InfraFailure) and got.stage == "deadline"
    # lab run got the chance to stop its VM and write its summary.
    assert (tree.parent / "got-sigterm").read_text() == "yes\n"


def test_kills_decided_before_the_deadline_are_kept(runner: LabRunner, tree: Path) -> None:
    # The guest wedged: gmem-ioctl timed out, kselftests hangs until the deadline. The
    # timeout is a verdict; only kselftests is left undecided (no rows: retried).
    (tree / "MODE").write_text("timeout-then-hang\n")
    got = runner.run(tree, ["gmem-ioctl", "kselftests"], 4, label="m-1")
    assert isinstance(got, dict), got
    assert [r.outcome for r in got["gmem-ioctl"]] == [Outcome.TIMEOUT]
    assert not got.get("kselftests")
    assert (tree.parent / "got-sigterm").read_text() == "yes\n"


def test_a_build_past_the_deadline_is_infrastructure(runner: LabRunner, tree: Path) -> None:
    (tree / "MODE").write_text("hang-build\n")
    got = runner.run(tree, ["gmem-ioctl"], 2, label="m-1")
    assert isinstance(got, InfraFailure) and got.stage == "deadline"
