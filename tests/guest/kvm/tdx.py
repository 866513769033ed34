"""TDX here: can a trust domain (KVM_X86_TDX_VM) be made, and if not, why not.

The reasons follow what the lab's host probe reads (harness/hosts/capabilities.py;
SERIES.md §7): KVM_CAP_VM_TYPES bit 5, the CPU vendor, /proc/cpuinfo's
tdx_host_platform flag (set when the BIOS enabled TDX private KeyIDs), and kvm_intel's
`tdx` parameter (0444, default N, reset to N by KVM when its TDX setup fails, so Y
means usable). Nothing here needs a TDX machine to run: on any other host the TDX
tests skip with the reason this module gives.
"""

from . import uapi

CPUINFO = "/proc/cpuinfo"
TDX_PARAM = "/sys/module/kvm_intel/parameters/tdx"


def read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def cpu_facts(cpuinfo: str) -> tuple[str, set[str]]:
    """(vendor_id, flags) of the first CPU in /proc/cpuinfo's text."""
    vendor, flags = "", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "vendor_id" and not vendor:
            vendor = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
        if vendor and flags:
            break
    return vendor, flags


def why_no_tdx(
    vm_types: list[int], cpuinfo: str | None = None, tdx_param: str | None = None
) -> str | None:
    """None when KVM offers TDX VMs; else the reason, most basic cause first.

    cpuinfo and tdx_param default to this machine's files (tests pass text)."""
    if uapi.KVM_X86_TDX_VM in vm_types:
        return None
    if cpuinfo is None:
        cpuinfo = read(CPUINFO) or ""
    if tdx_param is None:
        tdx_param = read(TDX_PARAM)
    vendor, flags = cpu_facts(cpuinfo)
    offered = "/".join(uapi.VM_TYPE_NAMES.get(t, str(t)) for t in vm_types) or "none"
    tail = f" (KVM_CAP_VM_TYPES offers {offered})"
    if vendor and vendor != "GenuineIntel":
        return f"not an Intel CPU (vendor {vendor}){tail}"
    if "hypervisor" in flags and "tdx_host_platform" not in flags:
        return f"a virtual machine without TDX (CPU flag hypervisor, no tdx_host_platform){tail}"
    if "tdx_host_platform" not in flags:
        return (
            "no TDX private KeyIDs (CPU flag tdx_host_platform absent): TDX is off in the "
            f"BIOS, the CPU lacks it, or the kernel lacks CONFIG_INTEL_TDX_HOST{tail}"
        )
    if tdx_param is None:
        return f"kvm_intel is not loaded, or built without CONFIG_KVM_INTEL_TDX{tail}"
    if tdx_param.strip() in ("N", "n", "0"):
        return (
            "kvm_intel.tdx=N: boot with kvm_intel.tdx=1 (KVM also resets it to N when its "
            f"TDX setup fails; dmesg says why){tail}"
        )
    return f"kvm_intel.tdx={tdx_param.strip()} but KVM_X86_TDX_VM is not offered{tail}"
