"""HostProbe: what a host is and can do, as the probe script found it (frozen, pure).

Fields the script could not fill are None (unknown). The questions (capability,
platform, check_declared) are answered by the rules in capabilities.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from harness.errors import UserError
from harness.hosts import capabilities
from harness.hosts.capabilities import CAPABILITIES

VM_TYPES: dict[str, int] = {
    "DEFAULT": 0,
    "SW_PROTECTED": 1,
    "SEV": 2,
    "SEV_ES": 3,
    "SNP": 4,
    "TDX": 5,
}
# The kernel config symbols the probe reads from the running kernel's config.
KCONFIG_SYMBOLS = ("KEXEC", "KEXEC_FILE", "INTEL_TDX_HOST", "KVM_INTEL", "KVM_AMD_SEV")


@dataclass(frozen=True)
class TdxState:
    # /proc/cpuinfo's tdx_host_platform: the kernel found TDX private KeyIDs.
    platform_flag: bool = False
    keyids: tuple[int, int] | None = None
    # initialized | not-loaded | failed | unknown (no line: not tried, or dmesg rotated)
    module: str = "unknown"
    # The failing line (module init failure, or an early "initialization failed: ...").
    failure: str = ""
    # kvm_intel.tdx: True/False, None when kvm_intel is not loaded.
    kvm_param: bool | None = None
    # kvm_intel's own lines about TDX (why it disabled it, SEAMCALL errors).
    kvm_messages: tuple[str, ...] = ()
    version: str | None = None
    pamt_kb: int | None = None


@dataclass(frozen=True)
class SevState:
    sev: bool | None = None
    sev_es: bool | None = None
    snp: bool | None = None
    # kvm_amd's "SEV-SNP enabled (ASIDs 1 - 99)" lines, by feature.
    lines: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class KexecSupport:
    binary: str | None = None
    load_disabled: bool | None = None
    # CONFIG_KEXEC / CONFIG_KEXEC_FILE of the running kernel: True/False, None unknown.
    config_kexec: bool | None = None
    config_kexec_file: bool | None = None
    config_source: str | None = None
    # The active lockdown mode ("none", "integrity", "confidentiality"), None unknown.
    lockdown: str | None = None


@dataclass(frozen=True)
class HostProbe:
    hostname: str = ""
    boot_id: str = ""
    release: str = ""
    proc_version: str = ""
    cmdline: str = ""
    vendor: str = ""
    flags: frozenset[str] = frozenset()
    # /proc/cpuinfo's bugs (tdx_pw_mce: the TDX partial-write erratum).
    bugs: frozenset[str] = frozenset()
    kvm_dev: bool = False
    # KVM_CAP_VM_TYPES bits, None unknown (then vm_types_note says why).
    vm_types: int | None = None
    vm_types_note: str = ""
    tdx: TdxState = TdxState()
    sev: SevState = SevState()
    dmesg_readable: bool = True
    mem_total_kib: int | None = None
    mem_available_kib: int | None = None
    # (mount point, free KiB) from df.
    disk_free_kib: tuple[tuple[str, int], ...] = ()
    kexec: KexecSupport = KexecSupport()
    kconfig: tuple[tuple[str, bool], ...] = ()
    systemd: bool = False
    python3: bool = False
    # The root filesystem's source device and its PARTUUID ("" when none).
    root_source: str = ""
    root_partuuid: str = ""
    initrd: str | None = None
    sections: frozenset[str] = field(default=frozenset(), repr=False)

    # --- questions ---------------------------------------------------------------------

    @property
    def intel(self) -> bool:
        return self.vendor == "GenuineIntel"

    @property
    def amd(self) -> bool:
        return self.vendor == "AuthenticAMD"

    def vm_type(self, name: str) -> bool | None:
        """Whether KVM offers a VM type (a VM_TYPES key), None when unknown."""
        if self.vm_types is None:
            return None
        return bool(self.vm_types & (1 << VM_TYPES[name]))

    def vm_type_names(self) -> list[str]:
        return [n for n in VM_TYPES if self.vm_type(n)]

    def config(self, symbol: str) -> bool | None:
        return dict(self.kconfig).get(symbol)

    def capability(self, name: str) -> tuple[bool, str]:
        """Whether the RUNNING kernel can do name now, with the evidence or the reason."""
        check = capabilities.RUNNING.get(name)
        if check is None:
            return False, f"unknown capability {name!r} (known: {', '.join(CAPABILITIES)})"
        return check(self)

    def platform(self, name: str) -> tuple[bool, str]:
        """Whether the MACHINE can do name with a suitable kernel (what lab.yaml's
        `capabilities:` declares; the host's default kernel need not enable it)."""
        check = capabilities.PLATFORM.get(name)
        if check is None:
            return False, f"unknown capability {name!r} (known: {', '.join(CAPABILITIES)})"
        return check(self)

    def check_declared(self, capabilities: Iterable[str], host: str) -> None:
        """A UserError naming every declared capability the machine lacks, and why."""
        problems = []
        for name in capabilities:
            ok, reason = self.platform(name)
            if not ok:
                problems.append(f"declares {name!r}, but the host lacks it: {reason}")
        if problems:
            raise UserError(
                f"hosts.{host}.capabilities: " + "; ".join(problems),
                "fix the host (BIOS, kernel parameters) or remove the capability from lab.yaml",
            )

    def free_kib(self, mount: str) -> int | None:
        return dict(self.disk_free_kib).get(mount)

    def to_json(self) -> dict[str, Any]:
        """For the run's environment record: plain JSON types only."""
        return {
            "hostname": self.hostname,
            "boot_id": self.boot_id,
            "release": self.release,
            "proc_version": self.proc_version,
            "cmdline": self.cmdline,
            "vendor": self.vendor,
            "virt_flags": sorted(self.flags & _INTERESTING_FLAGS),
            "bugs": sorted(self.bugs & {"tdx_pw_mce"}),
            "kvm_dev": self.kvm_dev,
            "vm_types": self.vm_type_names() if self.vm_types is not None else None,
            "vm_types_note": self.vm_types_note,
            "tdx": {
                "platform_flag": self.tdx.platform_flag,
                "keyids": list(self.tdx.keyids) if self.tdx.keyids else None,
                "module": self.tdx.module,
                "failure": self.tdx.failure,
                "kvm_param": self.tdx.kvm_param,
                "kvm_messages": list(self.tdx.kvm_messages),
                "version": self.tdx.version,
                "pamt_kb": self.tdx.pamt_kb,
            },
            "sev": {"sev": self.sev.sev, "sev_es": self.sev.sev_es, "snp": self.sev.snp},
            "dmesg_readable": self.dmesg_readable,
            "mem_total_kib": self.mem_total_kib,
            "mem_available_kib": self.mem_available_kib,
            "disk_free_kib": dict(self.disk_free_kib),
            "kexec": {
                "binary": self.kexec.binary,
                "load_disabled": self.kexec.load_disabled,
                "config_kexec": self.kexec.config_kexec,
                "config_kexec_file": self.kexec.config_kexec_file,
                "lockdown": self.kexec.lockdown,
            },
            "systemd": self.systemd,
            "python3": self.python3,
            "root": {"source": self.root_source, "partuuid": self.root_partuuid},
            "initrd": self.initrd,
            "capabilities": {n: list(self.capability(n)) for n in CAPABILITIES},
        }


_INTERESTING_FLAGS = frozenset({"vmx", "svm", "tdx_host_platform", "sev", "sev_es", "sev_snp"})
