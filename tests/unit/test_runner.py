"""The run end to end with stand-ins for build, image, VM and SSH."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from harness import build, config, image, run_stages, runner
from harness.config import LabConfig, SuiteSpec
from harness.qemu import boot as qemu_boot
from harness.results import Outcome, load_summary
from tests.unit.fakes import FakeImage, FakeMachine, FakeRemote, Reply, fake_build

BEFORE = "[    1.000000] Linux version 7.3.0\n[    2.000000] kvm: loaded\n"
WARN = "[   50.100000] WARNING: CPU: 1 PID: 99 at virt/kvm/guest_memfd.c:412 kvm_gmem_x+0x1\n"


def lab_with(tmp_path: Path, suites: dict[str, SuiteSpec]) -> LabConfig:
    lab = config.load()
    return lab.model_copy(update={"suites": {**lab.suites, **suites}})


class Harness:
    """Patches build/image/vm/Remote; the script decides what each guest command does."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: Any) -> None:
        self.tmp = tmp_path
        self.build = fake_build(
            tmp_path,
            {"guest_memfd_test": "built", "guest_memfd_conversions_test": "absent"},
        )
        self.remote = FakeRemote(script)
        self.machines: list[FakeMachine] = []
        # The source stage would fetch the real lab.yaml kernel: fake both halves.
        monkeypatch.setattr(build, "prepare_request", lambda lab, k, c: None)
        monkeypatch.setattr(build, "build_kernel", lambda request: self.build)
        monkeypatch.setattr(image, "ensure_image", lambda lab: FakeImage())

        def boot(lab: Any, bz: Path, img: Any, run_dir: Path, **kw: Any) -> FakeMachine:
            m = FakeMachine(run_dir)
            self.machines.append(m)
            return m

        monkeypatch.setattr(qemu_boot, "boot", boot)
        monkeypatch.setattr(run_stages, "Remote", lambda endpoint, **kw: self.remote)

    def run(self, lab: LabConfig, suites: tuple[str, ...]) -> tuple[int, Path, str]:
        out = io.StringIO()
        req = runner.RunRequest(
            kernel="mainline", config="lab", suites=suites, results_root=self.tmp / "results"
        )
        code = runner.run(lab, req, runner.Progress(out))
        return code, (self.tmp / "results" / "latest").resolve(), out.getvalue()


def dmesg_then(script: Any, dmesg: list[str]) -> Any:
    """Serve successive dmesg snapshots; everything else goes to script."""

    def reply(argv: list[str]) -> Reply:
        if argv == ["dmesg"]:
            return Reply(0, dmesg.pop(0) if len(dmesg) > 1 else dmesg[0])
        if argv == ["uname", "-r"]:
            return Reply(0, "7.3.0-gmemlab\n")
        return script(argv)  # type: ignore[no-any-return]

    return reply


KSELF = {
    "ks": SuiteSpec(kind="kselftest", tests=["guest_memfd_test", "guest_memfd_conversions_test"])
}


def test_passing_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ok = "TAP version 13\n1..2\nok 1 a\nok 2 b\n"
    h = Harness(tmp_path, monkeypatch, dmesg_then(lambda a: Reply(0, ok), [BEFORE]))
    code, run_dir, out = h.run(lab_with(tmp_path, KSELF), ("ks",))
    assert code == 0, out
    s = load_summary(run_dir)
    assert s.complete and s.counts["pass"] == 2 and s.counts["skip"] == 1
    assert s.environment["guest_kernel"] == "7.3.0-gmemlab"
    assert set(s.stages) == {"build", "image", "boot", "push", "suite:ks", "shutdown"}
    assert s.accounted_s["boot"] == 8.0 and s.harness_overhead_s is not None
    cell = run_dir / "mainline-lab-qemu"
    for name in ("console.log", "qemu-cmdline.txt", "reproduce.sh", "dmesg.txt"):
        assert (cell / name).is_file(), name
    assert (cell / "ks" / "guest_memfd_test.log").is_file()
    for name in ("report.html", "report.md", "junit.xml", "summary.json", "results.jsonl"):
        assert (run_dir / name).is_file(), name
    assert "verdict: PASS (exit 0)" in out and "report.html" in out
    assert all(m.dead for m in h.machines)
    assert "--manifest" in (cell / "reproduce.sh").read_text()


def test_new_warning_fails_a_passing_suite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Snapshots: after boot, before the suite, after it.
    script = dmesg_then(lambda a: Reply(0, "ok 1 a\n"), [BEFORE, BEFORE, BEFORE + WARN])
    h = Harness(tmp_path, monkeypatch, script)
    code, run_dir, _ = h.run(lab_with(tmp_path, KSELF), ("ks",))
    assert code == 1
    s = load_summary(run_dir)
    dmesg = [r for r in s.results if r.name == "dmesg"]
    assert dmesg and dmesg[0].outcome is Outcome.FAIL and "guest_memfd.c:412" in dmesg[0].excerpt
    assert s.suites["ks"]["outcome"] == "fail"
    assert "guest_memfd.c:412" in (run_dir / "report.md").read_text()


def test_warning_while_booting_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    suites = {"c": SuiteSpec(kind="command", argv=["true"])}
    h = Harness(tmp_path, monkeypatch, dmesg_then(lambda a: Reply(0), [BEFORE + WARN]))
    code, run_dir, _ = h.run(lab_with(tmp_path, suites), ("c",))
    assert code == 1
    got = [(r.suite, r.name, r.outcome.value) for r in load_summary(run_dir).results]
    assert got == [("boot", "dmesg", "fail"), ("c", "true", "pass")]


def test_injected_failure_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    suites = {"inject": SuiteSpec(kind="command", argv=["false"])}
    h = Harness(tmp_path, monkeypatch, dmesg_then(lambda a: Reply(1, ""), [BEFORE]))
    code, run_dir, out = h.run(lab_with(tmp_path, suites), ("inject",))
    assert code == 1 and "verdict: FAIL" in out
    assert "FAIL inject / false" in (run_dir / "report.md").read_text()


def test_lost_vm_keeps_earlier_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    suites = {
        "first": SuiteSpec(kind="command", argv=["true"]),
        "sleepy": SuiteSpec(kind="command", argv=["sleep", "600"]),
        "never": SuiteSpec(kind="command", argv=["true"]),
    }

    def script(argv: list[str]) -> Reply:
        return Reply(lost=True) if argv[0] == "sleep" else Reply(0)

    h = Harness(tmp_path, monkeypatch, dmesg_then(script, [BEFORE]))
    code, run_dir, _ = h.run(lab_with(tmp_path, suites), ("first", "sleepy", "never"))
    assert code == 2
    s = load_summary(run_dir)
    assert not s.complete and "without a crash" in s.incomplete_reason
    got = [(r.suite, r.outcome.value) for r in s.results]
    assert got == [("first", "pass"), ("sleepy", "error"), ("never", "missing")]
    assert "Incomplete run" in (run_dir / "report.html").read_text()


def test_kernel_panic_on_console_is_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    suites = {"boom": SuiteSpec(kind="command", argv=["./trigger"])}
    h = Harness(tmp_path, monkeypatch, None)

    def script(argv: list[str]) -> Reply:
        with h.machines[0].console_log.open("a") as f:
            f.write("[  60.0] Kernel panic - not syncing: Fatal exception\n")
        return Reply(lost=True)

    h.remote.script = dmesg_then(script, [BEFORE])
    code, run_dir, _ = h.run(lab_with(tmp_path, suites), ("boom",))
    assert code == 1
    (r,) = load_summary(run_dir).results
    assert r.outcome is Outcome.CRASH and "Kernel panic" in r.excerpt


def test_interrupt_still_writes_the_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def script(argv: list[str]) -> Reply:
        raise KeyboardInterrupt

    suites = {"c": SuiteSpec(kind="command", argv=["true"])}
    h = Harness(tmp_path, monkeypatch, dmesg_then(script, [BEFORE]))
    code, run_dir, out = h.run(lab_with(tmp_path, suites), ("c",))
    assert code == 2 and "interrupted" in out
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["complete"] is False and s["stages"]["suite:c"]["status"] == "interrupted"
    assert (run_dir / "report.html").is_file() and all(m.dead for m in h.machines)


def test_unknown_suite_is_a_user_error(tmp_path: Path) -> None:
    from harness.errors import UserError

    with pytest.raises(UserError, match="unknown suite"):
        runner.choose_suites(config.load(), ("nope",))


def test_cli_bad_input_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from harness import cli

    assert cli.main(["run", "--suites", "nope", "--results", str(tmp_path)]) == 3
    assert "unknown suite" in capsys.readouterr().err
    assert cli.main(["run", "--manifest", str(tmp_path / "missing.json")]) == 3
    assert not any(tmp_path.iterdir())  # no run folder for input that never started


def test_vm_gone_after_a_suite_is_said(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    suites = {
        "a": SuiteSpec(kind="command", argv=["true"]),
        "b": SuiteSpec(kind="command", argv=["true"]),
    }
    calls = {"dmesg": 0}

    def script(argv: list[str]) -> Reply:
        if argv == ["dmesg"]:
            calls["dmesg"] += 1
            # after boot, before suite a: fine; after suite a: the VM is gone.
            return Reply(0, BEFORE) if calls["dmesg"] <= 2 else Reply(lost=True)
        return Reply(0, "7.3.0\n")

    h = Harness(tmp_path, monkeypatch, script)
    code, run_dir, _ = h.run(lab_with(tmp_path, suites), ("a", "b"))
    assert code == 2
    got = [(r.suite, r.name, r.outcome.value) for r in load_summary(run_dir).results]
    assert got == [("a", "true", "pass"), ("a", "dmesg", "error"), ("b", "(suite)", "missing")]
