"""One way to stop: every long command installs harness.interrupt's handlers, so SIGTERM
both unwinds the command and sets the flag that the SSH polling loops check
(harness.remote_channel), which a library swallowing the exception cannot hide."""

from __future__ import annotations

import ast
import io
import json
import os
import signal
import time
from pathlib import Path

import pytest

from harness import cli, interrupt
from harness.paths import REPO_ROOT


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_CACHE", str(tmp_path / "cache"))


def sigterm_here() -> str | None:
    """Send this process SIGTERM; what interrupt.requested() says once it has unwound."""
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises long before this ends
    except interrupt.Interrupted:
        return interrupt.requested()
    return "SIGTERM did not raise"


# (argv, the module whose function runs inside the command's handlers, that function)
COMMANDS = {
    "run": (["run", "--kernel", "mainline"], "harness.runner", "run"),
    "boot": (["boot"], "harness.commands.boot", "_run"),
    "matrix": (["matrix", "nightly"], "harness.matrix", "run_matrix"),
    "bisect": (
        ["bisect", "--kernel", "mainline", "--good", "v1", "--bad", "v2", "--test", "t"],
        "harness.bisect",
        "run_bisect",
    ),
    "bisect --step": (
        ["bisect", "--step", "--kernel", "/tmp", "--test", "t"],
        "harness.bisect_step",
        "step",
    ),
}
RESULTS = {"run", "matrix", "bisect", "bisect --step"}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_sigterm_sets_the_flag_under_each_commands_handlers(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    argv, module, function = COMMANDS[name]
    seen: list[str | None] = []

    def inside(*args: object, **kwargs: object) -> int:
        seen.append(sigterm_here())
        return 0

    monkeypatch.setattr(f"{module}.{function}", inside)
    before = signal.getsignal(signal.SIGTERM)
    results = ["--results", str(tmp_path)] if name in RESULTS else []
    assert cli.main([*argv, *results]) == 0
    assert seen == ["SIGTERM"]
    # The command put the previous handler back and forgot the signal.
    assert signal.getsignal(signal.SIGTERM) is before
    assert interrupt.requested() is None


def test_handlers_nest_without_forgetting_a_signal() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with interrupt.handlers():
        with interrupt.handlers():
            assert sigterm_here() == "SIGTERM"
        # The inner block ending must not clear what the outer one is unwinding for.
        assert interrupt.requested() == "SIGTERM"
        assert signal.getsignal(signal.SIGTERM) is not before  # still the lab's
    assert interrupt.requested() is None
    assert signal.getsignal(signal.SIGTERM) is before


def test_no_module_installs_its_own_signal_handlers() -> None:
    """Only harness/interrupt.py calls signal.signal(): a command with its own handler
    would raise without setting the flag the polling loops check."""
    offenders = []
    for path in sorted((REPO_ROOT / "harness").rglob("*.py")):
        if path.name == "interrupt.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "signal"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "signal"
            ):
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
    assert offenders == []


def test_the_matrix_stops_after_the_cell_that_saw_the_signal(tmp_path: Path) -> None:
    """runner.run catches the interrupt to write the cell's report and returns; the flag
    is what tells the matrix not to build and boot the next cell."""
    from harness import config, matrix, runner
    from tests.unit.test_matrix import lab_with

    ran: list[str] = []

    def run_cell(lab: config.LabConfig, req: runner.RunRequest) -> int:
        ran.append(req.cell)
        (req.results_root / str(req.run_id)).mkdir(parents=True)
        sigterm_here()  # caught here, as runner.run does
        return 2

    with interrupt.handlers(), pytest.raises(interrupt.Interrupted):
        matrix.run_matrix(lab_with(tmp_path), "nightly", tmp_path / "r", run_cell=run_cell)
    assert ran == ["a-lab-qemu"]
    (folder,) = (tmp_path / "r").iterdir()
    assert [r["cell"] for r in json.loads((folder / "matrix.json").read_text())["runs"]] == [
        "a-lab-qemu"
    ]


def test_lab_run_ab_does_not_start_the_series_after_an_interrupted_base(
    tmp_path: Path,
) -> None:
    from harness import ab, config, runner
    from harness.progress import Progress

    ran: list[str] = []

    def run_one(lab: config.LabConfig, req: runner.RunRequest, p: Progress) -> int:
        ran.append(req.kernel)
        sigterm_here()  # caught, as runner.run does to write the report
        return 2

    req = runner.RunRequest(
        kernel="series", config="lab", suites=("gmem-ioctl",), results_root=tmp_path
    )
    with interrupt.handlers(), pytest.raises(interrupt.Interrupted):
        ab.run_ab(config.load(), req, "mainline", Progress(io.StringIO()), run_one)
    assert ran == ["mainline"]
