"""HostSession: probe, lock, deploy, restore and release in order, on a simulated host."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from harness.errors import InfraError, UserError
from harness.hosts import deploy, wait
from harness.hosts.lock import HostBusy, HostLock
from harness.hosts.stage import HostSession
from harness.hosts.target import HostTarget
from harness.results import Outcome
from tests.unit.hostfakes import DEFAULT_VERSION, TEST_VERSION, FakeClock, FakeHost

GOLDEN = Path(__file__).parent / "golden" / "hosts"
TARGET = HostTarget(name="tdx-1", ssh="root@tdx-1", capabilities=("tdx",), boot_timeout_s=300)


def setup(
    tmp: Path,
    *,
    golden: str = "tdx-host",
    test_golden: str | None = None,
    on_kexec: str = "boots",
) -> tuple[FakeHost, FakeClock, HostLock]:
    clock = FakeClock()
    host = FakeHost(clock, on_kexec=on_kexec)
    test_text = (GOLDEN / f"{test_golden}.probe").read_text() if test_golden else None
    host.attach(tmp / "host", (GOLDEN / f"{golden}.probe").read_text(), test_text)
    lock = HostLock(
        str(tmp / "host" / "run" / "gmemlab.lock"),
        host="tdx-1",
        lab_host="lab-a",
        say=lambda _t: None,
        proc=str(tmp / "host" / "proc"),
    )
    return host, clock, lock


def session(
    tmp: Path, host: FakeHost, clock: FakeClock, lock: HostLock, target: HostTarget = TARGET
) -> HostSession:
    return HostSession(
        target,
        run_id="run-1",
        run_dir=tmp / "results" / "cell",
        connect=host.connect,
        lock=lock,
        clock=wait.Clock(clock.now, clock.sleep),
        run_local=host.reset,
    )


def kernel(tmp: Path) -> deploy.KernelUnderTest:
    (tmp / "bzImage").write_bytes(b"MZ")
    return deploy.KernelUnderTest(tmp / "bzImage", "Linux version 7.3.4-lab (")


def lock_file(tmp: Path) -> dict[str, object] | None:
    path = tmp / "host" / "run" / "gmemlab.lock"
    return json.loads(path.read_text()) if path.exists() else None


def test_a_whole_host_run(tmp_path: Path) -> None:
    host, clock, lock = setup(tmp_path)
    with session(tmp_path, host, clock, lock) as s:
        held = lock_file(tmp_path)
        assert held is not None and held["boot_id"] == "boot-1" and held["run_id"] == "run-1"
        boot = s.deploy(kernel(tmp_path), ["kvm_intel.tdx=1"])
        assert boot.status is deploy.BootStatus.BOOTED and boot.proc_version == TEST_VERSION
        # The kexec emptied /run; the run took the lock again on the new boot.
        held = lock_file(tmp_path)
        assert held is not None and held["boot_id"] == "boot-2"
        assert "gmemlab.run=run-1" in (tmp_path / "host" / "proc" / "cmdline").read_text()
        assert s.kernel_probe is not None and s.kernel_probe.proc_version == TEST_VERSION
        assert s.lacks("tdx") is None
        assert s.shell is not None
    assert host.version == DEFAULT_VERSION and host.boot_id == "boot-3"
    assert s.restored is not None and s.restored.status == "restored"
    assert s.released == "gone" and lock_file(tmp_path) is None
    record = json.loads((tmp_path / "results" / "cell" / "host.json").read_text())
    assert record["boot"]["status"] == "booted"
    assert record["probe"]["tdx"]["module"] == "initialized"
    assert record["test_kernel_probe"]["proc_version"] == TEST_VERSION
    assert record["restore"]["proc_version"] == DEFAULT_VERSION


def test_declared_capability_missing_stops_before_the_lock(tmp_path: Path) -> None:
    host, clock, lock = setup(tmp_path, golden="intel-no-tdx")
    with (
        pytest.raises(UserError, match="declares 'tdx', but the host lacks it"),
        session(tmp_path, host, clock, lock),
    ):
        raise AssertionError("not reached")
    assert lock_file(tmp_path) is None
    record = json.loads((tmp_path / "results" / "cell" / "host.json").read_text())
    assert record["lock"]["released"] == "not taken" and record["boot"] is None


def test_busy_host_is_not_touched(tmp_path: Path) -> None:
    host, clock, lock = setup(tmp_path)
    other = dataclasses.replace(lock.owner("run-0", "boot-1"), lab_host="lab-b")
    (tmp_path / "host" / "run" / "gmemlab.lock").write_text(other.line() + "\n")
    with (
        pytest.raises(HostBusy, match="run run-0"),
        session(tmp_path, host, clock, lock),
    ):
        raise AssertionError("not reached")
    assert lock_file(tmp_path) == json.loads(other.line())  # left alone
    assert not any(c[0] == "mktemp" for c in host.calls)


def test_tdx_cell_skips_with_the_test_kernels_reason(tmp_path: Path) -> None:
    host, clock, lock = setup(tmp_path, test_golden="intel-no-tdx")
    with session(tmp_path, host, clock, lock) as s:
        s.deploy(kernel(tmp_path))
        assert s.lacks("tdx") == (
            "host tdx-1 lacks TDX: kvm_intel disabled TDX: tdx: no TDX private KeyIDs available"
        )
        assert s.lacks("kvm") is None


def test_a_kernel_that_never_answers_is_a_crash_and_the_host_is_reset(tmp_path: Path) -> None:
    host, clock, lock = setup(tmp_path, on_kexec="hangs")
    target = dataclasses.replace(TARGET, reset=("ipmitool", "-E", "chassis", "power", "cycle"))
    with session(tmp_path, host, clock, lock, target) as s:
        boot = s.deploy(kernel(tmp_path))
        assert boot.outcome is Outcome.CRASH and s.shell is None and s.kernel_probe is None
    assert s.restored is not None and s.restored.status == "restored"
    assert ["<local>", "ipmitool", "-E", "chassis", "power", "cycle"] in host.calls
    assert host.version == DEFAULT_VERSION and s.released == "gone"


def test_an_interrupted_run_still_restores(tmp_path: Path) -> None:
    host, clock, lock = setup(tmp_path)
    with pytest.raises(KeyboardInterrupt), session(tmp_path, host, clock, lock) as s:
        s.deploy(kernel(tmp_path))
        raise KeyboardInterrupt
    assert host.version == DEFAULT_VERSION and s.restored is not None
    assert s.restored.status == "restored"


def test_restore_never_keeps_the_test_kernel_and_releases_the_lock(tmp_path: Path) -> None:
    host, clock, lock = setup(tmp_path)
    target = dataclasses.replace(TARGET, restore="never")
    with session(tmp_path, host, clock, lock, target) as s:
        s.deploy(kernel(tmp_path))
    assert host.version == TEST_VERSION
    assert s.restored is not None and s.restored.status == "skipped"
    assert s.released == "released" and lock_file(tmp_path) is None


def test_failed_kexec_load_leaves_the_host_as_it_was(tmp_path: Path) -> None:
    host, clock, lock = setup(tmp_path)
    host.kexec_fails = "Cannot load bzImage"
    with (
        pytest.raises(InfraError, match="Cannot load bzImage"),
        session(tmp_path, host, clock, lock) as s,
    ):
        s.deploy(kernel(tmp_path))
    assert host.boot_id == "boot-1" and s.restored is not None
    assert s.restored.detail == "on its default kernel"
    assert s.released == "released" and lock_file(tmp_path) is None


def test_host_without_kexec_is_refused(tmp_path: Path) -> None:
    host, clock, lock = setup(tmp_path, golden="amd-snp-host")
    target = dataclasses.replace(TARGET, capabilities=("snp",))
    with (
        pytest.raises(UserError, match="cannot be deployed by kexec: no kexec binary"),
        session(tmp_path, host, clock, lock, target),
    ):
        raise AssertionError("not reached")


def test_lacks_for_the_machine_reads_the_hosts_own_probe(tmp_path: Path) -> None:
    # The test kernel lacks TDX, the machine does not: a cell can tell the two apart.
    host, clock, lock = setup(tmp_path, test_golden="intel-no-tdx")
    with session(tmp_path, host, clock, lock) as s:
        assert s.lacks("tdx", machine=True) is None
        s.deploy(kernel(tmp_path))
        assert s.lacks("tdx", machine=True) is None
        assert s.lacks("tdx") is not None
    host, clock, lock = setup(tmp_path / "b", golden="intel-no-tdx")
    target = dataclasses.replace(TARGET, capabilities=())
    with session(tmp_path / "b", host, clock, lock, target) as s:
        why = s.lacks("tdx", machine=True)
        assert why is not None and why.startswith("host tdx-1 lacks TDX: ")
