"""A cell on a bare-metal host, through the runner: probe, lock, kexec, suites, restore.

The host is tests/unit/hostfakes.py's simulated machine (its probe outputs are the
golden files), the build a fake one whose vmlinux carries the test kernel's banner,
and the suites' SSH session a FakeRemote, as in test_runner.py.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from harness import build, config, run_host, run_stages, runner
from harness.config import HostSpec, LabConfig, SuiteSpec
from harness.hosts import deploy, wait
from harness.hosts.lock import HostLock
from harness.hosts.stage import HostSession
from harness.hosts.target import HostTarget
from harness.results import Outcome, load_summary
from tests.unit.fakes import FakeRemote, Reply, fake_build
from tests.unit.hostfakes import DEFAULT_VERSION, TEST_VERSION, FakeClock, FakeHost
from tests.unit.test_hosts_identity import fake_bzimage, fake_vmlinux

GOLDEN = Path(__file__).parent / "golden" / "hosts"
DMESG = "[    1.000000] Linux version 7.3.4-lab\n"
SUITES = {
    "first": SuiteSpec(kind="command", argv=["true"]),
    "second": SuiteSpec(kind="command", argv=["uname", "-r"]),
}


def lab_with(host: HostSpec) -> LabConfig:
    lab = config.load()
    return lab.model_copy(update={"suites": {**lab.suites, **SUITES}, "hosts": {"tdx-1": host}})


class HostHarness:
    """The runner with a simulated host behind every SSH session of the host stage."""

    def __init__(
        self,
        tmp: Path,
        monkeypatch: pytest.MonkeyPatch,
        *,
        golden: str = "tdx-host",
        test_golden: str | None = None,
        on_kexec: str = "boots",
        script: Any = None,
    ) -> None:
        self.tmp = tmp
        self.clock = FakeClock()
        self.host = FakeHost(self.clock, on_kexec=on_kexec)
        test_text = (GOLDEN / f"{test_golden}.probe").read_text() if test_golden else None
        self.host.attach(tmp / "host", (GOLDEN / f"{golden}.probe").read_text(), test_text)
        self.lock = HostLock(
            str(tmp / "host" / "run" / "gmemlab.lock"),
            host="tdx-1",
            lab_host="lab-a",
            say=lambda _t: None,
            proc=str(tmp / "host" / "proc"),
        )
        self.built = 0
        b = fake_build(tmp, {})
        b.bzimage = fake_bzimage(tmp / "bzImage", "7.3.4-lab (builder@lab) #7 SMP")
        b.vmlinux = fake_vmlinux(tmp / "vmlinux", banner=TEST_VERSION, build_id=None)

        def build_kernel(request: object) -> object:
            self.built += 1
            return b

        monkeypatch.setattr(build, "prepare_request", lambda lab, k, c: None)
        monkeypatch.setattr(build, "build_kernel", build_kernel)
        self.remote = FakeRemote(script or self.suite_script)
        monkeypatch.setattr(run_stages, "Remote", lambda endpoint, **kw: self.remote)

        def session(target: Any, **kw: Any) -> HostSession:
            return HostSession(
                target,
                connect=self.host.connect,
                lock=self.lock,
                clock=wait.Clock(self.clock.now, self.clock.sleep),
                run_local=self.host.reset,
                **kw,
            )

        monkeypatch.setattr(run_host, "HostSession", session)

    def suite_script(self, argv: list[str]) -> Reply:
        if argv == ["dmesg"]:
            return Reply(0, DMESG)
        if argv == ["uname", "-r"]:
            return Reply(0, "7.3.4-lab\n")
        return Reply(0)

    def run(
        self, lab: LabConfig, config_name: str = "lab", target: str = "tdx-1"
    ) -> tuple[int, Path, str]:
        out = io.StringIO()
        req = runner.RunRequest(
            kernel="mainline",
            config=config_name,
            suites=tuple(SUITES),
            results_root=self.tmp / "results",
            target=target,
        )
        code = runner.run(lab, req, runner.Progress(out))
        return code, (self.tmp / "results" / "latest").resolve(), out.getvalue()

    def lock_file(self) -> Path:
        return self.tmp / "host" / "run" / "gmemlab.lock"


def outcomes(run_dir: Path) -> list[tuple[str, str, str]]:
    return [(r.suite, r.name, r.outcome.value) for r in load_summary(run_dir).results]


def test_a_cell_on_a_host_deploys_runs_and_restores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = HostHarness(tmp_path, monkeypatch)
    code, run_dir, out = h.run(lab_with(HostSpec(ssh="root@tdx-1", capabilities=["tdx"])))
    assert code == 0, out
    s = load_summary(run_dir)
    assert s.complete and s.cell == "mainline-lab-tdx-1"
    assert outcomes(run_dir) == [("first", "true", "pass"), ("second", "uname -r", "pass")]
    assert list(s.stages) == [
        "host",
        "build",
        "deploy",
        "push",
        "suite:first",
        "suite:second",
        "shutdown",
    ]
    env = s.environment
    assert env["host_kernel"] == DEFAULT_VERSION
    assert env["deployed_kernel"] == TEST_VERSION and env["guest_kernel"] == "7.3.4-lab"
    assert env["host_kernel_after"] == DEFAULT_VERSION
    assert str(env["host_restore"]).startswith("restored: rebooted into its default kernel")
    assert env["host_lock"] == "gone"  # the restore reboot emptied /run
    # The kexec boot and the restore reboot are boot time, not harness overhead.
    assert s.accounted_s["boot"] >= 80.0
    assert env["host_probe"]["tdx"]["module"] == "initialized"
    # The host is back on its own kernel and free.
    assert h.host.version == DEFAULT_VERSION and not h.lock_file().exists()
    cell = run_dir / "mainline-lab-tdx-1"
    host_json = json.loads((cell / "host.json").read_text())
    assert host_json["boot"]["proc_version"] == TEST_VERSION
    assert "--target tdx-1" in (cell / "reproduce.sh").read_text()
    report = (run_dir / "report.md").read_text()
    assert TEST_VERSION in report and DEFAULT_VERSION in report
    assert "[restore] restored" in out


def test_a_kernel_that_panics_at_boot_is_a_crash_and_the_host_comes_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = HostHarness(tmp_path, monkeypatch, on_kexec="panics")
    code, run_dir, out = h.run(lab_with(HostSpec(ssh="root@tdx-1")))
    assert code == 1, out
    s = load_summary(run_dir)
    assert not s.complete and "did not boot on tdx-1" in s.incomplete_reason
    got = outcomes(run_dir)
    assert got[0] == ("boot", "kexec on tdx-1", "crash")
    assert got[1:] == [("first", "(suite)", "missing"), ("second", "(suite)", "missing")]
    assert "came back on another kernel" in s.results[0].reason
    assert h.host.version == DEFAULT_VERSION
    assert str(s.environment["host_restore"]).startswith("restored: on its default kernel")
    assert not h.remote.calls  # no suite ran


def test_a_kernel_that_hangs_is_a_crash_and_the_reset_command_restores_the_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = HostHarness(tmp_path, monkeypatch, on_kexec="hangs")
    host = HostSpec(ssh="root@tdx-1", reset=["ipmitool", "-E", "chassis", "power", "cycle"])
    code, run_dir, _ = h.run(lab_with(host))
    assert code == 1
    assert outcomes(run_dir)[0] == ("boot", "kexec on tdx-1", "crash")
    assert "did not answer SSH within 600s" in load_summary(run_dir).results[0].reason
    assert ["<local>", "ipmitool", "-E", "chassis", "power", "cycle"] in h.host.calls
    assert h.host.version == DEFAULT_VERSION


def test_a_hung_host_without_reset_is_an_error_someone_must_see(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = HostHarness(tmp_path, monkeypatch, on_kexec="hangs")
    code, run_dir, _ = h.run(lab_with(HostSpec(ssh="root@tdx-1")))
    assert code == 1  # the crash outranks the host left down
    got = outcomes(run_dir)
    assert ("host", "restore tdx-1", "error") in got
    assert "power-cycle it by hand" in load_summary(run_dir).results[-1].reason


def test_a_tdx_cell_on_a_machine_without_tdx_skips_before_building(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = HostHarness(tmp_path, monkeypatch, golden="intel-no-tdx")
    code, run_dir, out = h.run(lab_with(HostSpec(ssh="root@tdx-1")), config_name="tdx")
    assert code == 0, out
    s = load_summary(run_dir)
    assert s.complete and h.built == 0 and h.host.boot_id == "boot-1"  # no kexec
    for r in s.results:
        assert r.outcome is Outcome.SKIP
        assert r.reason.startswith("host tdx-1 lacks TDX: "), r.reason
    assert "kvm_intel disabled TDX" in s.results[0].reason
    assert "host_restore" not in s.environment  # nothing was deployed, nothing to restore
    assert not h.lock_file().exists()


def test_a_tdx_cell_whose_kernel_does_not_enable_tdx_skips_after_the_deploy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = HostHarness(tmp_path, monkeypatch, test_golden="intel-no-tdx")
    code, run_dir, _ = h.run(lab_with(HostSpec(ssh="root@tdx-1")), config_name="tdx")
    assert code == 0
    s = load_summary(run_dir)
    assert {r.outcome for r in s.results} == {Outcome.SKIP}
    assert s.results[0].reason == (
        "host tdx-1 lacks TDX: kvm_intel disabled TDX: tdx: no TDX private KeyIDs available"
    )
    # The TDX cell's kernel was booted with TDX turned on in KVM, then the host restored.
    assert "kvm_intel.tdx=1" in str(s.environment["deploy_cmdline"])
    assert h.host.version == DEFAULT_VERSION


def test_a_declared_capability_the_host_lacks_is_the_users_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = HostHarness(tmp_path, monkeypatch, golden="intel-no-tdx")
    code, run_dir, out = h.run(lab_with(HostSpec(ssh="root@tdx-1", capabilities=["tdx"])))
    assert code == 3
    assert "hosts.tdx-1.capabilities: declares 'tdx', but the host lacks it" in out
    assert load_summary(run_dir).exit_code == 3


def test_a_busy_host_is_an_infra_error_naming_the_holder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = HostHarness(tmp_path, monkeypatch)
    holder = h.lock.owner("run-0", "boot-1")
    other = json.loads(holder.line()) | {"lab_host": "lab-b"}
    h.lock_file().write_text(json.dumps(other, sort_keys=True, separators=(",", ":")) + "\n")
    code, run_dir, out = h.run(lab_with(HostSpec(ssh="root@tdx-1")))
    assert code == 2 and "run run-0" in out and load_summary(run_dir).exit_code == 2
    assert h.built == 0 and h.host.boot_id == "boot-1"


def test_ctrl_c_during_a_suite_still_restores_the_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def script(argv: list[str]) -> Reply:
        if argv[0] == "uname" and len(argv) > 1:
            raise KeyboardInterrupt
        return Reply(0, DMESG if argv == ["dmesg"] else "")

    h = HostHarness(tmp_path, monkeypatch, script=script)
    code, run_dir, _ = h.run(lab_with(HostSpec(ssh="root@tdx-1")))
    s = load_summary(run_dir)
    assert code == 2 and not s.complete and "interrupted" in s.incomplete_reason
    assert h.host.version == DEFAULT_VERSION and not h.lock_file().exists()
    assert str(s.environment["host_restore"]).startswith("restored")


def test_an_unknown_target_is_the_users_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = HostHarness(tmp_path, monkeypatch)
    code, _, out = h.run(lab_with(HostSpec(ssh="root@tdx-1")), target="tdx-9")
    assert code == 3 and "unknown target 'tdx-9' (known: qemu, tdx-1)" in out


def test_a_panic_during_a_suite_is_a_crash_read_from_the_hosts_console(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h: HostHarness

    def script(argv: list[str]) -> Reply:
        if argv[0] == "uname" and len(argv) > 1:
            # What the console command captured, then panic=30 reboots the host.
            console = tmp_path / "results" / "latest" / "mainline-lab-tdx-1" / "console.log"
            with console.open("a") as f:
                f.write("[  99.1] Kernel panic - not syncing: guest_memfd: bad state\n")
            h.host._go(DEFAULT_VERSION, 40.0)
            return Reply(lost=True)
        return h.suite_script(argv)

    h = HostHarness(tmp_path, monkeypatch, script=script)
    code, run_dir, _ = h.run(lab_with(HostSpec(ssh="root@tdx-1")))
    assert code == 1
    s = load_summary(run_dir)
    crashed = [r for r in s.results if r.outcome is Outcome.CRASH]
    assert crashed and "Kernel panic" in crashed[0].reason
    assert h.host.version == DEFAULT_VERSION
    assert str(s.environment["host_restore"]).startswith("restored: on its default kernel")


def test_the_host_target_notices_its_test_kernel_is_gone(tmp_path: Path) -> None:
    clock = FakeClock()
    host = FakeHost(clock)
    target = HostTarget(name="tdx-1", ssh="root@tdx-1")
    boot = deploy.Boot(deploy.BootStatus.BOOTED, "ok", 40.0, "ro", TEST_VERSION, "boot-1")
    booted = run_host.HostBooted(target, boot, tmp_path / "console.log", host.connect)
    assert booted.alive() and booted.health() is None
    assert booted.wait_exit(10) is None  # boot-1 still answers
    host._go(DEFAULT_VERSION, 40.0)  # panic=30: the host reboots
    assert booted.wait_exit(10) == 1
    assert not booted.alive() and "no longer runs the test kernel" in str(booted.health())
    assert booted.crash() is None  # no console command, no console.log
