"""The host probe: its script's shape and the parser on documented host outputs."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from harness.errors import InfraError, UserError
from harness.hosts import capabilities, probe, probe_parse, probe_state
from harness.remote import Ran
from tests.unit.hostfakes import CannedShell

GOLDEN = Path(__file__).parent / "golden" / "hosts"


def load(name: str) -> probe_state.HostProbe:
    return probe_parse.parse((GOLDEN / f"{name}.probe").read_text())


def text(name: str) -> str:
    return (GOLDEN / f"{name}.probe").read_text()


def test_script_is_one_quoted_word_and_valid_sh() -> None:
    argv = probe.command()
    assert argv[:2] == ["sh", "-c"] and argv[2] == probe.SCRIPT
    # Quoted, the script survives a shell as exactly one word.
    assert shlex.split(shlex.join(argv)) == argv
    subprocess.run(["sh", "-n", "-c", probe.SCRIPT], check=True)
    assert "0xae03, 235" in probe.SCRIPT


def test_tdx_host_is_tdx_capable() -> None:
    p = load("tdx-host")
    assert (p.hostname, p.release, p.vendor) == ("tdx-1", "7.3.4-1-amd64", "GenuineIntel")
    assert p.proc_version.startswith("Linux version 7.3.4-1-amd64 ")
    assert p.tdx.platform_flag and p.tdx.keyids == (16, 64)
    assert p.tdx.module == "initialized" and p.tdx.pamt_kb == 262668
    assert p.tdx.kvm_param is True and p.tdx.version == "1.5.08"
    assert p.vm_type_names() == ["DEFAULT", "SW_PROTECTED", "TDX"]
    ok, reason = p.capability("tdx")
    assert ok, reason
    assert reason == "TDX module 1.5.08 initialized, kvm_intel.tdx=Y, KVM_X86_TDX_VM offered"
    assert p.platform("tdx") == (True, "BIOS enabled TDX private KeyIDs [16, 64)")
    p.check_declared(["tdx", "kvm", "kexec"], "tdx-1")


def test_tdx_host_other_facts() -> None:
    p = load("tdx-host")
    assert p.capability("kvm") == (True, "/dev/kvm present, VM types DEFAULT/SW_PROTECTED/TDX")
    assert p.mem_available_kib == 509114212 and p.mem_total_kib == 527958828
    assert p.free_kib("/") == 848381468 and p.free_kib("/boot") == 749428
    assert p.systemd and p.python3
    assert p.root_partuuid == "9e3c1b2a-04d7-4f5e-8b6a-1c2d3e4f5a6b"
    assert p.initrd == "/boot/initrd.img-7.3.4-1-amd64"
    assert p.kexec.config_kexec and p.kexec.config_kexec_file and p.kexec.lockdown == "none"
    assert p.config("INTEL_TDX_HOST") is True and p.config("KVM_AMD_SEV") is False
    # Sapphire/Emerald Rapids: kexec works in principle, with the erratum caveat.
    ok, reason = p.capability("kexec")
    assert ok and "tdx_pw_mce" in reason
    assert p.capability("sev") == (False, "not an AMD CPU (vendor GenuineIntel)")


def test_non_tdx_host_names_kvm_intel_reason() -> None:
    p = load("intel-no-tdx")
    assert not p.tdx.platform_flag and p.tdx.keyids is None and p.tdx.module == "unknown"
    assert p.tdx.kvm_param is False
    assert p.vm_type("TDX") is False and p.vm_type("SW_PROTECTED") is True
    assert p.capability("tdx") == (
        False,
        "kvm_intel disabled TDX: tdx: no TDX private KeyIDs available",
    )
    ok, reason = p.platform("tdx")
    assert not ok and "kvm_intel disabled TDX" in reason
    with pytest.raises(UserError) as err:
        p.check_declared(["kvm", "tdx"], "kvm-7")
    message = err.value.message
    assert "hosts.kvm-7.capabilities: declares 'tdx', but the host lacks it" in message
    assert "no TDX private KeyIDs available" in message
    # No erratum on this CPU: no caveat.
    assert p.capability("kexec") == (True, "/usr/sbin/kexec")
    assert p.root_partuuid == "" and p.root_source == "/dev/mapper/vg0-root"


def test_snp_host() -> None:
    p = load("amd-snp-host")
    assert p.amd and {"sev", "sev_es", "sev_snp", "svm"} <= p.flags
    assert p.sev.sev and p.sev.sev_es and p.sev.snp
    assert dict(p.sev.lines) == {"SEV": "enabled", "SEV-ES": "enabled", "SEV-SNP": "enabled"}
    assert p.vm_type_names() == ["DEFAULT", "SW_PROTECTED", "SEV", "SEV_ES", "SNP"]
    assert p.capability("snp") == (True, "kvm_amd: SEV-SNP enabled")
    assert p.capability("sev") == (True, "kvm_amd: SEV enabled")
    assert p.capability("tdx") == (False, "not an Intel CPU (vendor AuthenticAMD)")
    assert p.capability("kexec") == (False, "no kexec binary (install kexec-tools)")
    with pytest.raises(UserError, match=r"declares 'kexec'.*install kexec-tools"):
        p.check_declared(["snp", "kexec"], "snp-2")


def test_snp_disabled_by_kvm_amd_is_named() -> None:
    t = text("amd-snp-host")
    t = t.replace("sev_snp=Y", "sev_snp=N").replace("SEV-SNP enabled", "SEV-SNP disabled")
    p = probe_parse.parse(t)
    assert p.capability("snp") == (False, "kvm_amd: SEV-SNP disabled")
    assert p.platform("snp") == (True, "CPU flag sev_snp")


@pytest.mark.parametrize(
    ("dmesg", "module", "reason"),
    [
        (
            "[    0.000000] virt/tdx: BIOS enabled: private KeyID range [16, 64)\n"
            "[    6.2] virt/tdx: module not loaded\n",
            "not-loaded",
            "virt/tdx: module not loaded (no TDX module was loaded by the BIOS)",
        ),
        (
            "[    0.000000] virt/tdx: BIOS enabled: private KeyID range: [16, 64)\n"
            "[    0.000001] virt/tdx: initialization failed: Hibernation support is enabled\n",
            "unknown",
            "virt/tdx: initialization failed: Hibernation support is enabled",
        ),
        (
            "[    0.000000] virt/tdx: BIOS enabled: private KeyID range: [16, 64)\n"
            "[    6.1] virt/tdx: TDX-Module initialization failed (-5)\n",
            "failed",
            "virt/tdx: TDX-Module initialization failed (-5)",
        ),
        (
            "[    0.000000] virt/tdx: BIOS enabled: private KeyID range: [16, 64)\n"
            "[    6.1] kvm_intel: APICv is required for TDX\n",
            "unknown",
            "kvm_intel disabled TDX: APICv is required for TDX",
        ),
        (
            "[    0.000000] virt/tdx: BIOS enabled: private KeyID range: [16, 64)\n",
            "unknown",
            "kvm_intel.tdx=N in 7.3.4-1-amd64 (boot with kvm_intel.tdx=1)",
        ),
    ],
)
def test_tdx_failures_give_the_kernel_reason(dmesg: str, module: str, reason: str) -> None:
    t = text("tdx-host")
    head, rest = t.split("@@ dmesg\n")
    _, tail = rest.split("@@ meminfo\n")
    t = head + "@@ dmesg\n" + dmesg + "@@ meminfo\n" + tail
    t = t.replace("kvm_intel/parameters/tdx=Y", "kvm_intel/parameters/tdx=N")
    t = t.replace("tdx_host_platform ", "").replace("version=1.5.08", "").replace("\n35\n", "\n3\n")
    p = probe_parse.parse(t)
    assert p.tdx.module == module
    assert p.capability("tdx") == (False, reason)


def test_module_not_loaded_is_a_platform_problem_hibernation_is_not() -> None:
    t = text("tdx-host").replace("virt/tdx: TDX-Module initialized", "virt/tdx: module not loaded")
    assert probe_parse.parse(t).platform("tdx")[0] is False
    t = text("tdx-host").replace(
        "virt/tdx: TDX-Module initialized",
        "virt/tdx: initialization failed: Hibernation support is enabled",
    )
    assert probe_parse.parse(t).platform("tdx")[0] is True


def test_kernel_without_tdx_host_support() -> None:
    t = text("intel-no-tdx").replace(
        "CONFIG_INTEL_TDX_HOST=y", "# CONFIG_INTEL_TDX_HOST is not set"
    )
    t = t.replace("[    9.873112] kvm_intel: tdx: no TDX private KeyIDs available\n", "")
    p = probe_parse.parse(t)
    assert p.capability("tdx") == (
        False,
        "the running kernel 7.3.4-1-amd64 is built without CONFIG_INTEL_TDX_HOST",
    )


def test_unreadable_dmesg_is_said() -> None:
    t = text("intel-no-tdx").replace("@@ dmesg\n[    9.873112] kvm_intel: tdx: no TDX", "@@ x\n")
    t = t.replace("@@ x\n private KeyIDs available\n", "@@ dmesg_unreadable\n")
    p = probe_parse.parse(t)
    assert not p.dmesg_readable
    ok, reason = p.capability("tdx")
    assert not ok and reason.endswith("(dmesg was not readable: connect as root)")


def test_tdx_param_on_but_vm_type_missing() -> None:
    p = probe_parse.parse(text("tdx-host").replace("\n35\n", "\n3\n"))
    assert p.capability("tdx") == (
        False,
        "kvm_intel.tdx=Y but KVM_CAP_VM_TYPES lacks KVM_X86_TDX_VM",
    )


@pytest.mark.parametrize(
    ("line", "types", "note"),
    [
        ("unknown: no python3 on the host", None, "unknown: no python3 on the host"),
        ("0", None, "unknown: KVM_CAP_VM_TYPES not supported by this kernel (returned 0)"),
        (
            "PermissionError: [Errno 13] Permission denied: '/dev/kvm'",
            None,
            "PermissionError: [Errno 13] Permission denied: '/dev/kvm'",
        ),
        ("35", 35, ""),
    ],
)
def test_vm_types_unknown_is_said(line: str, types: int | None, note: str) -> None:
    p = probe_parse.parse(text("tdx-host").replace("@@ vm_types\n35\n", f"@@ vm_types\n{line}\n"))
    assert (p.vm_types, p.vm_types_note) == (types, note)
    if types is None:
        # Unknown VM types never hide a TDX that kvm_intel reports as enabled.
        assert p.capability("tdx")[0] is True


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (("@@ kexec_load_disabled\n0", "@@ kexec_load_disabled\n1"), "kexec_load_disabled is 1"),
        (("[none] integrity", "none [integrity]"), "lockdown is 'integrity'"),
        (("CONFIG_KEXEC=y\nCONFIG_KEXEC_FILE=y\n", ""), "neither CONFIG_KEXEC nor"),
    ],
)
def test_kexec_blockers(change: tuple[str, str], reason: str) -> None:
    p = probe_parse.parse(text("intel-no-tdx").replace(*change))
    ok, why = p.capability("kexec")
    assert not ok and reason in why


def test_unknown_capability() -> None:
    p = load("tdx-host")
    assert p.capability("sgx")[0] is False
    with pytest.raises(UserError, match="unknown capability 'sgx'"):
        p.check_declared(["sgx"], "tdx-1")


def test_to_json_is_plain() -> None:
    import json

    data = load("tdx-host").to_json()
    assert json.loads(json.dumps(data)) == data
    assert data["tdx"]["keyids"] == [16, 64]
    assert data["capabilities"]["tdx"][0] is True
    assert data["virt_flags"] == ["tdx_host_platform", "vmx"]


def test_run_parses_and_failure_is_infra() -> None:
    shell = CannedShell(Ran("sh -c ...", 0, text("tdx-host"), "", 0.2))
    assert probe.run(shell).hostname == "tdx-1"
    assert shell.calls == [probe.command()]
    broken = CannedShell(Ran("sh -c ...", 127, "", "sh: not found", 0.1))
    with pytest.raises(InfraError, match="host probe failed \\(sh: not found\\)"):
        probe.run(broken)
    cut = CannedShell(Ran("sh -c ...", None, "@@ hostname\nx\n", "", 0.1, lost=True, error="gone"))
    with pytest.raises(InfraError, match="gone"):
        probe.run(cut)


def test_script_runs_here_and_parses() -> None:
    """The real script on this machine: every section present, nothing raises."""
    out = subprocess.run(probe.command(), capture_output=True, text=True, timeout=60, check=True)
    p = probe_parse.parse(out.stdout)
    assert {"hostname", "boot_id", "cpu", "kvm", "meminfo", "end"} <= p.sections
    assert p.boot_id and p.release and p.proc_version.startswith("Linux version")
    for name in capabilities.CAPABILITIES:
        ok, reason = p.capability(name)
        assert isinstance(ok, bool) and reason
