"""Reading the probe script's output: `@@ name` sections into a HostProbe (pure; no I/O).

What the lines mean (tests/unit/golden/hosts/SOURCES.md has the references):
- TDX: Documentation/arch/x86/tdx.rst (`virt/tdx: BIOS enabled: private KeyID range`,
  `virt/tdx: module not loaded`, `... KB allocated for PAMT`, `virt/tdx: TDX-Module
  initialized` / older `module initialized`, `... initialization failed`); kvm_intel's
  `tdx` parameter; arch/x86/kvm/vmx/tdx.c prints why it disabled TDX; the tdx-host
  driver's /sys/devices/faux/tdx_host/version holds the TDX module's version.
- KVM_CHECK_EXTENSION(KVM_CAP_VM_TYPES) on /dev/kvm: a bit per supported VM type.
- SEV: kvm_amd's `sev`, `sev_es`, `sev_snp` parameters and its `SEV-SNP enabled (ASIDs
  a - b)` lines (arch/x86/kvm/svm/sev.c).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from harness import printk
from harness.hosts.probe_state import (
    KCONFIG_SYMBOLS,
    HostProbe,
    KexecSupport,
    SevState,
    TdxState,
)

_BIOS_KEYIDS = re.compile(r"virt/tdx: BIOS enabled: private KeyID range:? \[(\d+), (\d+)\)")
_MODULE_OK = re.compile(r"virt/tdx: (?:TDX-Module|module) initialized")
_MODULE_FAILED = re.compile(r"virt/tdx: (?:TDX-Module|module) initialization failed.*")
_MODULE_MISSING = re.compile(r"virt/tdx: module not loaded")
_EARLY_FAILED = re.compile(r"virt/tdx: initialization failed: (.*)")
_PAMT = re.compile(r"virt/tdx: (\d+) KBs? allocated for PAMT")
_KVM_TDX = re.compile(r"kvm_intel: .*\btdx\b", re.IGNORECASE)
_SEV_LINE = re.compile(r"kvm_amd: (SEV(?:-ES|-SNP)?) (enabled|disabled|unusable) \(ASIDs")


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
        for symbol in KCONFIG_SYMBOLS:
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
