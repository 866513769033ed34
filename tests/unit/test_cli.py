"""`lab`'s own exit codes: bad input 3, infrastructure 2, never a traceback, never 1."""

from __future__ import annotations

import argparse
import errno
from pathlib import Path

import pytest

from harness import cli
from harness.config import LabConfig
from harness.errors import InfraError, UserError


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    return tmp_path / "cache"


def run_with(
    monkeypatch: pytest.MonkeyPatch, exc: BaseException, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    """`lab image` whose stage raises exc; returns (exit code, stderr)."""

    def boom(args: argparse.Namespace, lab: LabConfig) -> int:
        raise exc

    from harness.commands import image

    monkeypatch.setattr(image, "run", boom)
    code = cli.main(["image"])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [[], ["nosuch"], ["run", "--no-such-option"], ["matrix"], ["matrix", "n", "--repeat", "x"]],
)
def test_bad_arguments_exit_3(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(argv)
    assert done.value.code == 3
    err = capsys.readouterr().err
    assert "error:" in err and "--help" in err


def test_help_still_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["--help"])
    assert done.value.code == 0


@pytest.mark.parametrize(
    ("exc", "code", "text"),
    [
        (UserError("bad thing", "do this"), 3, "lab: bad thing\n  -> do this"),
        (InfraError("QEMU died", "see the log"), 2, "lab: QEMU died\n  -> see the log"),
        (
            OSError(errno.ENOSPC, "No space left on device", "/results/x/disk.qcow2"),
            2,
            "disk full: No space left on device (/results/x/disk.qcow2)",
        ),
        (PermissionError(errno.EACCES, "Permission denied", "/cache"), 2, "not permitted"),
        (KeyboardInterrupt(), 130, "lab: interrupted"),
    ],
)
def test_expected_failures_map_to_their_exit_codes_without_traceback(
    cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    exc: BaseException,
    code: int,
    text: str,
) -> None:
    got, err = run_with(monkeypatch, exc, capsys)
    assert got == code
    assert text in err
    assert "Traceback" not in err


def test_a_bug_exits_2_with_the_traceback_in_a_file(
    cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    got, err = run_with(monkeypatch, ValueError("malformed nested-KVM line"), capsys)
    assert got == 2  # the machinery failed; 1 would claim a test failed
    assert "internal error: ValueError: malformed nested-KVM line" in err
    assert "Traceback" not in err
    (saved,) = (cache / "errors").iterdir()
    assert "Traceback" in saved.read_text() and str(saved) in err


def test_runner_interrupted_is_an_interrupt(
    cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from harness import runner

    got, err = run_with(monkeypatch, runner.Interrupted(), capsys)
    assert (got, err.strip()) == (130, "lab: interrupted")


def test_debug_env_shows_the_traceback(
    cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(ValueError, match="bug"):
        run_with(monkeypatch, ValueError("bug"), capsys)


def test_bad_lab_file_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--lab", str(tmp_path), "image"]) == 3
    err = capsys.readouterr().err
    assert f"lab: {tmp_path}: is a directory" in err and "Traceback" not in err


def test_run_target_and_wait_reach_the_request(
    cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from harness import runner

    seen: list[runner.RunRequest] = []

    def fake_run(lab: LabConfig, req: runner.RunRequest, progress: object = None) -> int:
        seen.append(req)
        return 0

    monkeypatch.setattr(runner, "run", fake_run)
    args = ["run", "--kernel", "mainline", "--results", str(tmp_path)]
    assert cli.main([*args, "--target", "hv1", "--wait", "30"]) == 0
    assert cli.main(args) == 0
    assert [(r.target, r.wait_s, r.cell) for r in seen] == [
        ("hv1", 30.0, "mainline-lab-hv1"),
        ("qemu", 0.0, "mainline-lab-qemu"),  # lab.yaml's defaults.target
    ]
    assert cli.main([*args, "--wait", "-1"]) == 3
