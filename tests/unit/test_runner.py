"""The run end to end with stand-ins for build, image, VM and SSH."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from harness import build, config, image, run_stages, runner
from harness.cellrun import CLEAR_WARN_ONCE
from harness.config import LabConfig, SuiteSpec
from harness.errors import Finding, TreeError
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


def test_warn_once_is_rearmed_before_each_suite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A WARN_ON_ONCE the first suite set off must be able to fire again in the next
    # one: each suite's dmesg snapshot follows a write to clear_warn_once.
    calls: list[list[str]] = []

    suites = {
        "a": SuiteSpec(kind="command", argv=["true"]),
        "b": SuiteSpec(kind="command", argv=["true"]),
    }
    h = Harness(tmp_path, monkeypatch, dmesg_then(lambda a: Reply(0), [BEFORE]))
    original = h.remote.run

    def recording_run(argv: list[str], **kw: Any) -> Any:
        calls.append(list(argv))
        return original(argv, **kw)

    monkeypatch.setattr(h.remote, "run", recording_run)
    code, _, _ = h.run(lab_with(tmp_path, suites), ("a", "b"))
    assert code == 0
    rearm = ["sh", "-c", CLEAR_WARN_ONCE]
    suite_starts = [i for i, argv in enumerate(calls) if argv in (["true"],)]
    assert len(suite_starts) == 2
    for start in suite_starts:
        before = calls[:start]
        assert before[-1] == ["dmesg"] and rearm in before, calls
        assert max(i for i, a in enumerate(before) if a == rearm) > max(
            (i for i, a in enumerate(before[:-1]) if a == ["true"]), default=-1
        ), calls


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


def test_a_kernel_that_does_not_build_fails_the_cell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compile error is the cell's finding: a build result, exit 1, verdict FAIL."""
    h = Harness(tmp_path, monkeypatch, dmesg_then(lambda a: Reply(0), [BEFORE]))
    log = tmp_path / "make.log"
    error = "virt/kvm/guest_memfd.c:42:1: error: expected ';' before '}' token"
    log.write_text(f"  CC      virt/kvm/guest_memfd.o\n{error}\n")

    def broken(request: Any) -> Any:
        reason = f"the kernel does not build: {error}"
        finding = Finding("build", "kernel", reason, error, log)
        raise TreeError(reason, f"read the full log: {log}", findings=(finding,))

    monkeypatch.setattr(build, "build_kernel", broken)
    code, run_dir, out = h.run(lab_with(tmp_path, KSELF), ("ks",))
    assert code == 1, out
    s = load_summary(run_dir)
    assert (s.exit_code, s.verdict, s.complete) == (1, "FAIL", True)
    (r,) = s.results
    assert (r.suite, r.name, r.outcome) == ("build", "kernel", Outcome.FAIL)
    assert r.log == "mainline-lab-qemu/build-kernel.log"
    assert (run_dir / r.log).read_text() == log.read_text()
    assert error in (run_dir / "report.md").read_text()
    assert s.stages["build"]["status"] == "failed" and "boot" not in s.stages
    assert not h.machines  # nothing booted


PATCHES = (
    {"index": 1, "total": 2, "subject": "KVM: guest_memfd: say hello",
     "message_id": "<p1@example.org>", "status": "applied", "detail": "", "conflicts": []},
    {"index": 2, "total": 2, "subject": "KVM: selftests: add gmemlab_hello_test",
     "message_id": "<p2@example.org>", "status": "applied", "detail": "", "conflicts": []},
)  # fmt: skip


def test_a_series_that_applied_is_listed_in_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(tmp_path, monkeypatch, dmesg_then(lambda a: Reply(0, "ok 1 a\n"), [BEFORE]))
    manifest = tmp_path / "manifest.json"
    source = {"kind": "mbox", "mbox_sha256": "ab" * 32, "patches": list(PATCHES)}
    manifest.write_text(json.dumps({"source": source, "patches": list(PATCHES)}))
    h.build.manifest = manifest
    code, run_dir, _ = h.run(lab_with(tmp_path, KSELF), ("ks",))
    assert code == 0
    s = load_summary(run_dir)
    assert [p["status"] for p in s.series] == ["applied", "applied"]
    assert s.environment["mbox_sha256"] == "ab" * 32
    md = (run_dir / "report.md").read_text()
    assert "## Series" in md and "2 applied" in md
    assert "| 1/2 | KVM: guest_memfd: say hello | <p1@example.org> | applied |" in md
    assert (
        "<td>KVM: selftests: add gmemlab_hello_test</td>" in (run_dir / "report.html").read_text()
    )


def test_a_series_that_does_not_apply_fails_the_cell_naming_the_patch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(tmp_path, monkeypatch, dmesg_then(lambda a: Reply(0), [BEFORE]))
    log = tmp_path / "0002.am.log"
    log.write_text("error: patch failed: virt/kvm/guest_memfd.c:12\n")
    failed = {**PATCHES[1], "status": "failed", "detail": "error: patch failed",
              "conflicts": ["virt/kvm/guest_memfd.c"]}  # fmt: skip
    reason = "patch 2/2 'KVM: selftests: add gmemlab_hello_test' does not apply"
    finding = Finding("series", "patch 2", reason, log.read_text(), log)

    def not_applied(lab: Any, kernel: str, config: str) -> Any:
        raise TreeError(reason, findings=(finding,), patches=(PATCHES[0], failed))

    monkeypatch.setattr(build, "prepare_request", not_applied)
    code, run_dir, _ = h.run(lab_with(tmp_path, KSELF), ("ks",))
    assert code == 1
    s = load_summary(run_dir)
    assert (s.verdict, s.complete) == ("FAIL", True)
    (r,) = s.results
    assert (r.suite, r.name, r.outcome) == ("series", "patch 2", Outcome.FAIL)
    md = (run_dir / "report.md").read_text()
    assert reason in md and "1 applied" in md
    assert "| failed | error: patch failed (conflicts: virt/kvm/guest_memfd.c) |" in md
    assert s.environment["kernel"] == "mainline"


def probe_json(**overrides: object) -> str:
    data = {"kernel": "7.3.4", "kvm": True, "guest_memfd": True, "attrs2_gmem": False,
            "attrs2_gmem_errno": "ENOTTY", "sw_protected": True,
            "gmem_in_place_conversion_param": None, **overrides}  # fmt: skip
    return json.dumps(data)


def test_an_expected_feature_that_is_absent_fails_the_cell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def script(argv: list[str]) -> Reply:
        if argv[:2] == ["python3", "tests/guest/probe.py"]:
            return Reply(0, probe_json())
        return Reply(0, "ok 1 a\n")

    h = Harness(tmp_path, monkeypatch, dmesg_then(script, [BEFORE]))
    lab = lab_with(tmp_path, KSELF)
    mainline = lab.kernels["mainline"].model_copy(update={"expect": ["attrs2_gmem"]})
    lab = lab.model_copy(update={"kernels": {**lab.kernels, "mainline": mainline}})
    code, run_dir, _ = h.run(lab, ("ks",))
    assert code == 1
    s = load_summary(run_dir)
    (r,) = [r for r in s.results if r.suite == "expect"]
    assert r.outcome is Outcome.FAIL
    assert r.reason.startswith("expected feature attrs2_gmem absent: attrs2_gmem=False")
    assert "expected feature attrs2_gmem absent" in (run_dir / "report.md").read_text()
    assert "tests/guest" in {name for _, name in h.remote.pushed}  # the probe went along
    assert s.suites["ks"]["outcome"] == "pass"  # the suites still ran


def test_without_expect_there_is_no_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(tmp_path, monkeypatch, dmesg_then(lambda a: Reply(0, "ok 1 a\n"), [BEFORE]))
    code, run_dir, _ = h.run(lab_with(tmp_path, KSELF), ("ks",))
    assert code == 0
    assert not [c for c in h.remote.calls if "tests/guest/probe.py" in c]
    assert "expect" not in load_summary(run_dir).suites


def test_the_reproducer_of_a_cli_series_names_the_mbox_until_a_build_exists() -> None:
    req = runner.RunRequest(
        kernel="hello-on-mainline",
        config="lab",
        suites=("ks",),
        series_args=("--mbox", "/m/hello.mbox", "--base", "mainline"),
    )
    argv = req.reproducer(None)
    assert "--kernel" not in argv and argv[-4:] == ["--mbox", "/m/hello.mbox", "--base", "mainline"]
    built = req.reproducer(Path("/b/manifest.json"))
    assert built[2:4] == ["--kernel", "hello-on-mainline"] and "--mbox" not in built
