"""Accelerator choice with fake probes, and the KVM probe against fake QEMUs."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from harness.errors import InfraError
from harness.qemu import accel

CPUINFO_AMD = "processor\t: 0\nflags\t\t: fpu vme svm npt\n"
CPUINFO_INTEL = "processor\t: 0\nflags\t\t: fpu vme vmx ept\n"
CPUINFO_NONE = "processor\t: 0\nflags\t\t: fpu vme\n"


def probe(works: bool, version: tuple[int, int, int] = (10, 0, 2)) -> accel.Probe:
    return accel.Probe(works, "ran" if works else "KVM internal error", version)


def test_auto_uses_kvm_when_it_really_works_and_exposes_svm() -> None:
    a = accel.choose("auto", lambda: probe(True), lambda: CPUINFO_AMD)
    assert a.name == "kvm"
    assert a.argv == ("-accel", "kvm", "-cpu", "host,+svm")
    assert a.cpu_model == "host,+svm"


def test_kvm_on_intel_exposes_vmx() -> None:
    a = accel.choose("kvm", lambda: probe(True), lambda: CPUINFO_INTEL)
    assert a.argv[-1] == "host,+vmx"


def test_kvm_without_virt_flag_is_plain_host() -> None:
    assert accel.choose("auto", lambda: probe(True), lambda: CPUINFO_NONE).cpu_model == "host"


def test_auto_falls_back_to_tcg_max_with_the_reason() -> None:
    a = accel.choose("auto", lambda: probe(False), lambda: CPUINFO_AMD)
    assert a.name == "tcg"
    assert a.argv == ("-accel", "tcg", "-cpu", "max")
    assert "KVM internal error" in a.reason


def test_tcg_requested_never_uses_kvm() -> None:
    a = accel.choose("tcg", lambda: probe(True), lambda: CPUINFO_AMD)
    assert a.name == "tcg"
    assert a.reason == "vm.accel is tcg"


def test_kvm_requested_but_broken_is_an_error() -> None:
    with pytest.raises(InfraError, match=r"vm\.accel is kvm but KVM does not work"):
        accel.choose("kvm", lambda: probe(False), lambda: CPUINFO_AMD)


def test_old_qemu_gets_single_threaded_tcg() -> None:
    a = accel.choose("auto", lambda: probe(False, (7, 2, 0)), lambda: CPUINFO_AMD)
    assert a.argv[:2] == ("-accel", "tcg,thread=single")
    assert "QEMU < 8" in a.reason


def test_host_virt_flag() -> None:
    assert accel.host_virt_flag(CPUINFO_AMD) == "svm"
    assert accel.host_virt_flag(CPUINFO_INTEL) == "vmx"
    assert accel.host_virt_flag(CPUINFO_NONE) is None


def test_probe_result_is_cached_per_qemu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def fake_probe(qemu: str, kernel: Path) -> accel.Probe:
        calls.append(qemu)
        return probe(False)

    monkeypatch.setattr(accel, "probe_kvm", fake_probe)
    qemu = fake_qemu(tmp_path, "exit 0")
    first = accel.cached_probe(str(qemu), tmp_path / "bz", cache=tmp_path)
    second = accel.cached_probe(str(qemu), tmp_path / "bz", cache=tmp_path)
    assert first == second
    assert calls == [str(qemu)]
    (cached,) = tmp_path.glob("*.json")
    assert json.loads(cached.read_text())["kvm_works"] is False


# --- the probe itself, against QEMU stand-ins ----------------------------------------

FAKE_QEMU = """#!/bin/sh
if [ "$1" = --version ]; then echo "QEMU emulator version 10.0.2"; exit 0; fi
console=""
while [ $# -gt 0 ]; do
    case "$1" in -serial) console="${2#file:}"; shift;; esac
    shift
done
BODY
"""


def fake_qemu(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "qemu-system-x86_64"
    path.write_text(FAKE_QEMU.replace("BODY", body))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


needs_kvm_node = pytest.mark.skipif(
    not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="the probe first checks /dev/kvm"
)


@needs_kvm_node
def test_probe_succeeds_when_the_kernel_reaches_its_root_panic(tmp_path: Path) -> None:
    body = 'echo "Kernel panic - not syncing: VFS: Unable to mount root fs" > "$console"'
    result = accel.probe_kvm(str(fake_qemu(tmp_path, body)), tmp_path / "bz")
    assert result.kvm_works
    assert result.qemu_version == (10, 0, 2)


@needs_kvm_node
def test_probe_fails_fast_on_emulation_failure_and_kills_qemu(tmp_path: Path) -> None:
    # A paravirtual KVM pauses the guest instead of exiting: the probe must not wait.
    pidfile = tmp_path / "pid"
    body = f'echo $$ > {pidfile}; echo "KVM internal error. Suberror: 1" >&2; exec sleep 60'
    result = accel.probe_kvm(str(fake_qemu(tmp_path, body)), tmp_path / "bz")
    assert not result.kvm_works
    assert "KVM internal error" in result.reason
    pid = int(pidfile.read_text())
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
