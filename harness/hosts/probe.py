"""What a host is and can do, from ONE remote shell script and a pure parser.

The script is a constant (nothing from lab.yaml goes into it); it prints sections
`@@ name` followed by that section's lines, and `parse` turns that text into a frozen
HostProbe. A section the host could not fill (no python3, no dmesg access, an old
kernel) leaves its field unknown (None), and the capability answers say so.

What the lines mean (tests/unit/golden/hosts/SOURCES.md has the references):
- TDX: Documentation/arch/x86/tdx.rst (`virt/tdx: BIOS enabled: private KeyID range`,
  `virt/tdx: module not loaded`, `... KB allocated for PAMT`, `virt/tdx: TDX-Module
  initialized` / older `module initialized`, `... initialization failed`); kvm_intel's
  `tdx` parameter is 0444, default N, and reset to N when KVM's TDX setup fails, so Y
  means usable; arch/x86/kvm/vmx/tdx.c prints why it disabled TDX; the tdx-host
  driver's /sys/devices/faux/tdx_host/version holds the TDX module's version.
- KVM_CHECK_EXTENSION(KVM_CAP_VM_TYPES = 235) on /dev/kvm: a bit per supported VM type.
- SEV: kvm_amd's `sev`, `sev_es`, `sev_snp` parameters and its `SEV-SNP enabled (ASIDs
  a - b)` lines (arch/x86/kvm/svm/sev.c).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from harness import printk
from harness.errors import InfraError, UserError
from harness.hosts.shell import HostShell

KVM_CHECK_EXTENSION = 0xAE03
KVM_CAP_VM_TYPES = 235
VM_TYPES: dict[str, int] = {
    "DEFAULT": 0,
    "SW_PROTECTED": 1,
    "SEV": 2,
    "SEV_ES": 3,
    "SNP": 4,
    "TDX": 5,
}
CAPABILITIES = ("kvm", "kexec", "tdx", "sev", "snp")

_PY_VM_TYPES = (
    "import fcntl, os; "
    "fd = os.open('/dev/kvm', os.O_RDWR | os.O_CLOEXEC); "
    f"print(fcntl.ioctl(fd, {KVM_CHECK_EXTENSION:#x}, {KVM_CAP_VM_TYPES}))"
)

_PARAMS = (
    "/sys/module/kvm_intel/parameters/tdx",
    "/sys/module/kvm_amd/parameters/sev",
    "/sys/module/kvm_amd/parameters/sev_es",
    "/sys/module/kvm_amd/parameters/sev_snp",
    "/sys/module/kvm/parameters/tdp_mmu",
)
_KCONFIG = ("KEXEC", "KEXEC_FILE", "INTEL_TDX_HOST", "KVM_INTEL", "KVM_AMD_SEV")

# POSIX sh (dash on Debian); every command may fail without stopping the rest.
SCRIPT = f"""\
export LC_ALL=C
set -f
sec() {{ printf '@@ %s\\n' "$1"; }}
sec hostname; uname -n
sec boot_id; cat /proc/sys/kernel/random/boot_id
sec release; uname -r
sec version; cat /proc/version
sec cmdline; cat /proc/cmdline
sec cpu
grep -m1 '^vendor_id' /proc/cpuinfo; grep -m1 '^flags' /proc/cpuinfo; grep -m1 '^bugs' /proc/cpuinfo
sec kvm; if [ -c /dev/kvm ]; then echo present; else echo absent; fi
sec vm_types
if ! command -v python3 >/dev/null 2>&1; then echo 'unknown: no python3 on the host'
elif [ ! -c /dev/kvm ]; then echo 'unknown: no /dev/kvm'
else python3 -c "{_PY_VM_TYPES}" 2>&1 | tail -n 1; fi
sec params
for p in {" ".join(_PARAMS)}; do
  [ -r "$p" ] && printf '%s=%s\\n' "$p" "$(cat "$p")"
done
sec tdx_host
for f in version seamldr_version num_remaining_updates; do
  p=/sys/devices/faux/tdx_host/$f
  [ -r "$p" ] && printf '%s=%s\\n' "$f" "$(cat "$p" 2>/dev/null)"
done
if d=$(dmesg 2>/dev/null) || d=$(journalctl -k -b -o cat --no-pager 2>/dev/null); then
  sec dmesg
  printf '%s\\n' "$d" | grep -E 'virt/tdx|kvm_intel|kvm_amd|tdx|SEV' | tail -n 300
else
  sec dmesg_unreadable
fi
sec meminfo; grep -E '^(MemTotal|MemAvailable):' /proc/meminfo
sec df; df -Pk / /boot 2>/dev/null
sec kexec
for k in $(command -v kexec) /usr/sbin/kexec /sbin/kexec; do
  if [ -x "$k" ]; then echo "$k"; break; fi
done
sec kexec_load_disabled; cat /proc/sys/kernel/kexec_load_disabled 2>/dev/null
sec lockdown; cat /sys/kernel/security/lockdown 2>/dev/null
sec kconfig
want='^(# )?CONFIG_({"|".join(_KCONFIG)})[ =]'
if [ -r /proc/config.gz ]; then
  echo source=/proc/config.gz; gzip -dc /proc/config.gz | grep -E "$want"
elif [ -r "/boot/config-$(uname -r)" ]; then
  echo "source=/boot/config-$(uname -r)"; grep -E "$want" "/boot/config-$(uname -r)"
fi
sec systemd; if [ -d /run/systemd/system ]; then echo yes; else echo no; fi
sec python3; command -v python3
sec root; findmnt -n -P -o SOURCE,FSTYPE,PARTUUID / 2>/dev/null
sec initrd
for f in "/boot/initrd.img-$(uname -r)" "/boot/initramfs-$(uname -r).img"; do
  [ -r "$f" ] && echo "$f"
done
sec end
"""


def command() -> list[str]:
    """The probe as an argv: the script is one quoted word, never pasted raw."""
    return ["sh", "-c", SCRIPT, "gmemlab-probe"]


# --- parsed state ----------------------------------------------------------------------

_BIOS_KEYIDS = re.compile(r"virt/tdx: BIOS enabled: private KeyID range:? \[(\d+), (\d+)\)")
_MODULE_OK = re.compile(r"virt/tdx: (?:TDX-Module|module) initialized")
_MODULE_FAILED = re.compile(r"virt/tdx: (?:TDX-Module|module) initialization failed.*")
_MODULE_MISSING = re.compile(r"virt/tdx: module not loaded")
_EARLY_FAILED = re.compile(r"virt/tdx: initialization failed: (.*)")
_PAMT = re.compile(r"virt/tdx: (\d+) KBs? allocated for PAMT")
_KVM_TDX = re.compile(r"kvm_intel: .*\btdx\b", re.IGNORECASE)
_SEV_LINE = re.compile(r"kvm_amd: (SEV(?:-ES|-SNP)?) (enabled|disabled|unusable) \(ASIDs")


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
        check = _RUNNING.get(name)
        if check is None:
            return False, f"unknown capability {name!r} (known: {', '.join(CAPABILITIES)})"
        return check(self)

    def platform(self, name: str) -> tuple[bool, str]:
        """Whether the MACHINE can do name with a suitable kernel (what lab.yaml's
        `capabilities:` declares; the host's default kernel need not enable it)."""
        check = _PLATFORM.get(name)
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


# --- capability checks -------------------------------------------------------------------


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


_RUNNING = {"kvm": _kvm, "kexec": _kexec, "tdx": _tdx, "sev": _sev, "snp": _snp}
_PLATFORM = {
    "kvm": _kvm_platform,
    "kexec": _kexec,
    "tdx": _tdx_platform,
    "sev": _amd_flag("sev"),
    "snp": _amd_flag("sev_snp"),
}


# --- parsing -------------------------------------------------------------------------------


def sections(text: str) -> dict[str, list[str]]:
    """The script's output split at its `@@ name` lines."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for raw in text.splitlines():
        line = raw.rstrip("\r")
        if line.startswith("@@ "):
            current = found.setdefault(line[3:].strip(), [])
        elif current is not None:
            current.append(line)
    return found


def _first(sec: Mapping[str, list[str]], name: str) -> str:
    lines = [line for line in sec.get(name, []) if line.strip()]
    return lines[0].strip() if lines else ""


def _yn(value: str | None) -> bool | None:
    if value is None:
        return None
    return value.strip() in ("Y", "y", "1")


def _int(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None


def _pairs(lines: Iterable[str]) -> dict[str, str]:
    out = {}
    for line in lines:
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _parse_tdx(
    flags: frozenset[str], dmesg: list[str], params: dict[str, str], tdx_host: dict[str, str]
) -> TdxState:
    keyids = None
    module = "unknown"
    failure = ""
    pamt = None
    kvm: list[str] = []
    for line in dmesg:
        if m := _BIOS_KEYIDS.search(line):
            keyids = (int(m.group(1)), int(m.group(2)))
        elif _MODULE_OK.search(line):
            module = "initialized"
        elif m := _MODULE_FAILED.search(line):
            module, failure = "failed", m.group(0)
        elif _MODULE_MISSING.search(line):
            module = "not-loaded"
        elif m := _EARLY_FAILED.search(line):
            failure = m.group(0)
        elif m := _PAMT.search(line):
            pamt = int(m.group(1))
        elif m := _KVM_TDX.search(line):
            kvm.append(line[line.index("kvm_intel: ") + len("kvm_intel: ") :].strip())
    return TdxState(
        platform_flag="tdx_host_platform" in flags,
        keyids=keyids,
        module=module,
        failure=failure,
        kvm_param=_yn(params.get("/sys/module/kvm_intel/parameters/tdx")),
        kvm_messages=tuple(kvm),
        version=tdx_host.get("version") or None,
        pamt_kb=pamt,
    )


def _parse_sev(dmesg: list[str], params: dict[str, str]) -> SevState:
    lines: dict[str, str] = {}
    for line in dmesg:
        if m := _SEV_LINE.search(line):
            lines[m.group(1)] = m.group(2)
    base = "/sys/module/kvm_amd/parameters/"
    return SevState(
        sev=_yn(params.get(base + "sev")),
        sev_es=_yn(params.get(base + "sev_es")),
        snp=_yn(params.get(base + "sev_snp")),
        lines=tuple(sorted(lines.items())),
    )


def _parse_df(lines: list[str]) -> tuple[tuple[str, int], ...]:
    out = []
    for line in lines[1:]:  # the header
        words = line.split()
        if len(words) >= 6 and words[3].isdigit():
            out.append((words[5], int(words[3])))
    return tuple(dict(out).items())


def _parse_kconfig(lines: list[str]) -> tuple[str | None, tuple[tuple[str, bool], ...]]:
    source = None
    found: dict[str, bool] = {}
    for line in lines:
        if line.startswith("source="):
            source = line.removeprefix("source=")
        elif m := re.match(r"^# CONFIG_(\w+) is not set", line):
            found[m.group(1)] = False
        elif m := re.match(r"^CONFIG_(\w+)=(\S+)", line):
            found[m.group(1)] = m.group(2) in ("y", "m")
    if source is not None:
        # A symbol the config does not mention at all is off (its dependencies are).
        for symbol in _KCONFIG:
            found.setdefault(symbol, False)
    return source, tuple(sorted(found.items()))


def _parse_vm_types(line: str) -> tuple[int | None, str]:
    value = _int(line)
    if value is None:
        return None, line or "unknown: no answer"
    if value == 0:
        return None, "unknown: KVM_CAP_VM_TYPES not supported by this kernel (returned 0)"
    return value, ""


def _parse_root(line: str) -> tuple[str, str]:
    fields = dict(re.findall(r'(\w+)="([^"]*)"', line))
    return fields.get("SOURCE", ""), fields.get("PARTUUID", "")


def parse(text: str) -> HostProbe:
    """The HostProbe that the script's output describes (pure; no I/O)."""
    sec = sections(text)
    cpu = _pairs(line.replace(":", "=", 1) for line in sec.get("cpu", []))
    flags = frozenset(cpu.get("flags", "").split())
    params = _pairs(sec.get("params", []))
    dmesg = [printk.strip_timestamp(line) for line in sec.get("dmesg", [])]
    meminfo = _pairs(line.replace(":", "=", 1) for line in sec.get("meminfo", []))
    vm_types, note = _parse_vm_types(_first(sec, "vm_types"))
    source, kconfig = _parse_kconfig(sec.get("kconfig", []))
    config = dict(kconfig)
    load_disabled = _first(sec, "kexec_load_disabled")
    lockdown = re.search(r"\[(\w+)\]", _first(sec, "lockdown"))
    root_source, root_partuuid = _parse_root(_first(sec, "root"))
    return HostProbe(
        hostname=_first(sec, "hostname"),
        boot_id=_first(sec, "boot_id"),
        release=_first(sec, "release"),
        proc_version=_first(sec, "version"),
        cmdline=_first(sec, "cmdline"),
        vendor=cpu.get("vendor_id", ""),
        flags=flags,
        bugs=frozenset(cpu.get("bugs", "").split()),
        kvm_dev=_first(sec, "kvm") == "present",
        vm_types=vm_types,
        vm_types_note=note,
        tdx=_parse_tdx(flags, dmesg, params, _pairs(sec.get("tdx_host", []))),
        sev=_parse_sev(dmesg, params),
        dmesg_readable="dmesg_unreadable" not in sec,
        mem_total_kib=_int(meminfo.get("MemTotal", "").removesuffix("kB")),
        mem_available_kib=_int(meminfo.get("MemAvailable", "").removesuffix("kB")),
        disk_free_kib=_parse_df(sec.get("df", [])),
        kexec=KexecSupport(
            binary=_first(sec, "kexec") or None,
            load_disabled=None if not load_disabled else load_disabled != "0",
            config_kexec=config.get("KEXEC"),
            config_kexec_file=config.get("KEXEC_FILE"),
            config_source=source,
            lockdown=lockdown.group(1) if lockdown else None,
        ),
        kconfig=kconfig,
        systemd=_first(sec, "systemd") == "yes",
        python3=bool(_first(sec, "python3")),
        root_source=root_source,
        root_partuuid=root_partuuid,
        initrd=_first(sec, "initrd") or None,
        sections=frozenset(sec),
    )


def run(shell: HostShell, timeout_s: float = 60.0) -> HostProbe:
    """Probe the host behind shell."""
    ran = shell.run(command(), timeout_s=timeout_s)
    if not ran.ok or "end" not in sections(ran.stdout):
        why = ran.error or ran.stderr.strip()[-300:] or f"exit {ran.exit_code}"
        raise InfraError(
            f"host probe failed ({why})",
            "check that the host runs Linux with a POSIX sh and that the SSH user can log in",
        )
    return parse(ran.stdout)
