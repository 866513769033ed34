"""Capability rules: from a HostProbe, whether a host can do kvm, kexec, tdx, sev or snp,
with the evidence or the reason it cannot.

Two questions per capability: RUNNING (the kernel running now can do it) and PLATFORM
(the machine can, with a suitable kernel: what lab.yaml's `capabilities:` declares).
kvm_intel's `tdx` parameter is 0444, default N, and reset to N when KVM's TDX setup
fails, so Y means usable; kvm_amd's `sev`, `sev_es`, `sev_snp` likewise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.hosts.probe_state import HostProbe

CAPABILITIES = ("kvm", "kexec", "tdx", "sev", "snp")


def _kvm(p: HostProbe) -> tuple[bool, str]:
    if p.kvm_dev:
        types = f", VM types {'/'.join(p.vm_type_names())}" if p.vm_types is not None else ""
        return True, f"/dev/kvm present{types}"
    ok, reason = _kvm_platform(p)
    return False, f"no /dev/kvm on {p.release}" + (
        " (kvm_intel/kvm_amd not loaded?)" if ok else f": {reason}"
    )


def _kvm_platform(p: HostProbe) -> tuple[bool, str]:
    virt = sorted(p.flags & {"vmx", "svm"})
    if virt:
        return True, f"CPU flag {virt[0]}"
    if p.kvm_dev:
        return True, "/dev/kvm present"
    return False, "the CPU flags have neither vmx nor svm (virtualisation off in the BIOS?)"


def _kexec(p: HostProbe) -> tuple[bool, str]:
    k = p.kexec
    if k.binary is None:
        return False, "no kexec binary (install kexec-tools)"
    if k.load_disabled:
        return False, "kernel.kexec_load_disabled is 1 (cannot be reset without a reboot)"
    if k.config_kexec is False and k.config_kexec_file is False:
        return False, f"{p.release} has neither CONFIG_KEXEC nor CONFIG_KEXEC_FILE"
    if k.lockdown in ("integrity", "confidentiality"):
        return False, f"kernel lockdown is {k.lockdown!r}: only signed kernels can be kexec'd"
    notes = [] if k.config_source else ["kernel config not readable"]
    if "tdx_pw_mce" in p.bugs and (p.tdx.platform_flag or p.tdx.keyids):
        # Documentation/arch/x86/tdx.rst, "Kexec": refused on TDX hosts with the erratum
        # until kernels that reset TDX private memory before the jump.
        notes.append(TDX_ERRATUM_NOTE)
    return True, "; ".join([k.binary, *notes])


TDX_ERRATUM_NOTE = (
    "TDX host with the tdx_pw_mce erratum: kernels without the TDX kexec fix refuse "
    "`kexec -l` here (Documentation/arch/x86/tdx.rst, Kexec)"
)


def _tdx(p: HostProbe) -> tuple[bool, str]:
    if not p.intel:
        return False, f"not an Intel CPU (vendor {p.vendor or 'unknown'})"
    t = p.tdx
    if t.kvm_param is True:
        if p.vm_type("TDX") is False:
            return False, "kvm_intel.tdx=Y but KVM_CAP_VM_TYPES lacks KVM_X86_TDX_VM"
        module = f"TDX module {t.version}" if t.version else "TDX module"
        return True, f"{module} initialized, kvm_intel.tdx=Y" + (
            ", KVM_X86_TDX_VM offered" if p.vm_type("TDX") else ""
        )
    return False, _tdx_why_not(p)


def _tdx_why_not(p: HostProbe) -> str:
    t = p.tdx
    unreadable = "" if p.dmesg_readable else " (dmesg was not readable: connect as root)"
    if t.module == "not-loaded":
        return "virt/tdx: module not loaded (no TDX module was loaded by the BIOS)"
    if t.failure:
        return t.failure
    if t.kvm_messages:
        return "kvm_intel disabled TDX: " + "; ".join(t.kvm_messages)
    if not (t.platform_flag or t.keyids):
        if p.config("INTEL_TDX_HOST") is False:
            return f"the running kernel {p.release} is built without CONFIG_INTEL_TDX_HOST"
        return (
            "no TDX private KeyIDs (no 'virt/tdx: BIOS enabled' line, no tdx_host_platform "
            "flag): TDX is off in the BIOS or the CPU lacks it" + unreadable
        )
    if t.kvm_param is None:
        return "kvm_intel is not loaded"
    return f"kvm_intel.tdx=N in {p.release} (boot with kvm_intel.tdx=1)" + unreadable


def _tdx_platform(p: HostProbe) -> tuple[bool, str]:
    if not p.intel:
        return False, f"not an Intel CPU (vendor {p.vendor or 'unknown'})"
    t = p.tdx
    if t.module == "not-loaded":
        return False, _tdx_why_not(p)
    if t.failure.endswith("too few private KeyIDs available."):
        return False, t.failure
    if t.keyids:
        return True, f"BIOS enabled TDX private KeyIDs [{t.keyids[0]}, {t.keyids[1]})"
    if t.platform_flag or t.kvm_param:
        return True, "CPU flag tdx_host_platform"
    return False, _tdx_why_not(p)


def _sev_like(p: HostProbe, feature: str, param: bool | None, vm_type: str) -> tuple[bool, str]:
    if not p.amd:
        return False, f"not an AMD CPU (vendor {p.vendor or 'unknown'})"
    if param is True:
        if p.vm_type(vm_type) is False:
            return False, f"kvm_amd enables {feature} but KVM_CAP_VM_TYPES lacks {vm_type}"
        return True, f"kvm_amd: {feature} enabled"
    said = dict(p.sev.lines).get(feature)
    if said:
        return False, f"kvm_amd: {feature} {said}"
    if param is None:
        return False, "kvm_amd is not loaded or built without CONFIG_KVM_AMD_SEV"
    return False, f"kvm_amd's {feature} parameter is N"


def _sev(p: HostProbe) -> tuple[bool, str]:
    return _sev_like(p, "SEV", p.sev.sev, "SEV")


def _snp(p: HostProbe) -> tuple[bool, str]:
    return _sev_like(p, "SEV-SNP", p.sev.snp, "SNP")


def _amd_flag(flag: str) -> Callable[[HostProbe], tuple[bool, str]]:
    def check(p: HostProbe) -> tuple[bool, str]:
        if not p.amd:
            return False, f"not an AMD CPU (vendor {p.vendor or 'unknown'})"
        if flag in p.flags:
            return True, f"CPU flag {flag}"
        return False, f"the CPU flags lack {flag} (off in the BIOS, or the kernel disabled it)"

    return check


RUNNING: dict[str, Callable[[HostProbe], tuple[bool, str]]] = {
    "kvm": _kvm,
    "kexec": _kexec,
    "tdx": _tdx,
    "sev": _sev,
    "snp": _snp,
}
PLATFORM: dict[str, Callable[[HostProbe], tuple[bool, str]]] = {
    "kvm": _kvm_platform,
    "kexec": _kexec,
    "tdx": _tdx_platform,
    "sev": _amd_flag("sev"),
    "snp": _amd_flag("sev_snp"),
}
