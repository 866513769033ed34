"""Feature probes: what this kernel's KVM really does, found by trying it.

The series' capability numbers moved in nearly every revision and collide
with mainline capabilities, so nothing here trusts a series cap number.
Mainline caps (VM_TYPES, GUEST_MEMFD_FLAGS) are read, and every series
feature is detected from how the kernel answers a harmless ioctl.
"""

import errno
import json
import os
import platform
from dataclasses import asdict, dataclass, field

from . import api, child, gup, numa, uapi
from .guest import SCRATCH_GPA, MiniGuest

PARAM_DIR = "/sys/module/kvm/parameters"
VCPU_PROBE_TIMEOUT = 20.0


@dataclass
class Features:
    kernel: str = ""
    page_size: int = uapi.PAGE_SIZE
    kvm: bool = False
    kvm_error: str = ""
    guest_memfd: bool = False
    vm_types: list[int] = field(default_factory=list)
    # KVM_CAP_GUEST_MEMFD_FLAGS per VM type name
    gmem_flags: dict[str, int] = field(default_factory=dict)
    # KVM_CAP_MEMORY_ATTRIBUTES (mainline, per-VM attributes) per VM type name
    vm_attributes: dict[str, int] = field(default_factory=dict)
    # KVM_SET_MEMORY_ATTRIBUTES2 on a guest_memfd fd (size 0: EINVAL = present)
    attrs2_gmem: bool = False
    attrs2_gmem_errno: str = ""
    # ... and on a VM fd (RFC v3/v4 with per-VM attributes enabled)
    attrs2_vm: bool = False
    attrs2_vm_errno: str = ""
    # Content-mode flags (RFC v3..v5) accepted per direction, on a SW_PROTECTED gmem
    content_modes: dict[str, dict[str, bool]] = field(default_factory=dict)
    # The series' KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES, found by its answers (not by a
    # number): PRIVATE at system scope and for a SW_PROTECTED VM, 0 for a default VM.
    # None when no capability or more than one answers that way (candidates lists them).
    gmem_attributes_cap: int | None = None
    gmem_attributes_cap_candidates: list[int] = field(default_factory=list)
    # How the gmem ioctl treats a nonzero error_offset on input: "rejected" (EINVAL,
    # RFC v3), "ignored" (output only, v8's api.rst), another errno name, or "" (not probed)
    error_offset_input: str = ""
    # kvm.vm_memory_attributes (v3..v7) / kvm.gmem_in_place_conversion (v8+), raw
    vm_memory_attributes_param: str | None = None
    gmem_in_place_conversion_param: str | None = None
    vcpus_run: bool = False
    vcpus_run_reason: str = ""
    gup_test: bool = False
    numa_nodes: int = 1
    thp_pmd_size: int = 0
    # Probe steps that failed unexpectedly (the rest of the probe still ran).
    probe_errors: list[str] = field(default_factory=list)

    @property
    def sw_protected(self) -> bool:
        return uapi.KVM_X86_SW_PROTECTED_VM in self.vm_types

    @property
    def per_gmem_attributes(self) -> bool:
        """In-place conversion through the guest_memfd ioctl is live."""
        return self.attrs2_gmem

    @property
    def attrs2(self) -> bool:
        """KVM_SET_MEMORY_ATTRIBUTES2 answers on a guest_memfd or on the VM fd: the
        series is in, whichever attributes path the config left live."""
        return self.attrs2_gmem or self.attrs2_vm

    def content_mode(self, flag_name: str, direction: str) -> bool:
        return self.content_modes.get(flag_name, {}).get(direction, False)

    @property
    def any_content_mode(self) -> bool:
        return any(any(d.values()) for d in self.content_modes.values())

    def to_json(self) -> str:
        data = asdict(self)
        data["sw_protected"] = self.sw_protected
        data["per_gmem_attributes"] = self.per_gmem_attributes
        data["attrs2"] = self.attrs2
        return json.dumps(data, indent=2, sort_keys=True)

    def summary(self) -> dict[str, str]:
        """Flat name -> value pairs for JUnit properties and the session header."""
        data = json.loads(self.to_json())
        return {
            key: value if isinstance(value, str) else json.dumps(value, sort_keys=True)
            for key, value in data.items()
        }


def _errno_name(code: int | None) -> str:
    return errno.errorcode.get(code or 0, str(code))


def _read_param(name: str) -> str | None:
    try:
        with open(os.path.join(PARAM_DIR, name)) as f:
            return f.read().strip()
    except OSError:
        return None


def _probe_attrs2(fd: int) -> tuple[bool, str]:
    """size 0 is rejected by validation (EINVAL) iff the ioctl exists (else ENOTTY)."""
    try:
        api.set_memory_attributes2(fd, api.attrs2(0, 0, 0))
    except OSError as exc:
        return exc.errno == errno.EINVAL, _errno_name(exc.errno)
    return True, "0"  # accepting size 0 would itself be a bug; tests will say so


def _probe_content_modes() -> dict[str, dict[str, bool]]:
    """For ZERO and PRESERVE: does a real 1-page conversion with that flag succeed?

    Probed on SW_PROTECTED VMs only: a nonzero mode on a default VM gmem hits
    a WARN_ONCE in RFC v3. Each try uses a fresh guest_memfd whose page has
    never been allocated, so no contents are touched.
    """
    modes: dict[str, dict[str, bool]] = {}
    for name, flag in (
        ("zero", uapi.KVM_SET_MEMORY_ATTRIBUTES2_ZERO),
        ("preserve", uapi.KVM_SET_MEMORY_ATTRIBUTES2_PRESERVE),
    ):
        modes[name] = {}
        for direction, target in (
            ("to_shared", 0),
            ("to_private", uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE),
        ):
            try:
                with api.Vm(uapi.KVM_X86_SW_PROTECTED_VM) as vm:
                    supported = vm.gmem_supported_flags()
                    init_flags = 0
                    if target == uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE:
                        if not supported & uapi.GUEST_MEMFD_FLAG_INIT_SHARED:
                            modes[name][direction] = False
                            continue
                        init_flags = uapi.GUEST_MEMFD_FLAG_INIT_SHARED
                    fd = vm.create_guest_memfd(uapi.PAGE_SIZE, init_flags)
                    api.gmem_set_attributes(fd, 0, uapi.PAGE_SIZE, target, flag)
                modes[name][direction] = True
            except OSError:
                modes[name][direction] = False
    return modes


# Mainline capabilities whose answers can look like the series' one (PRIVATE for a
# SW_PROTECTED VM, 0 for a default VM): per-VM KVM_CAP_MEMORY_ATTRIBUTES.
_NOT_GMEM_ATTRIBUTES_CAPS = {uapi.KVM_CAP_MEMORY_ATTRIBUTES}
CAP_SCAN_LIMIT = 1024


def _probe_gmem_attributes_cap(kvm_fd: int, sw_protected: bool) -> list[int]:
    """Capabilities answering like KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES (v5: 249, v8: 250).

    KVM_CHECK_EXTENSION has no side effects and answers 0 for unknown numbers, so
    scanning every number is safe; the number itself is never trusted.
    """
    private = uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE
    system = [c for c in range(1, CAP_SCAN_LIMIT) if api.check_extension(kvm_fd, c) == private]
    with api.Vm() as vm:
        candidates = [c for c in system if vm.check_extension(c) == 0]
    if sw_protected:
        with api.Vm(uapi.KVM_X86_SW_PROTECTED_VM) as vm:
            candidates = [c for c in candidates if vm.check_extension(c) == private]
    return [c for c in candidates if c not in _NOT_GMEM_ATTRIBUTES_CAPS]


def _probe_error_offset_input() -> str:
    """A no-op request (PRIVATE on a page that is already private) with error_offset set.

    RFC v3 rejects it (EINVAL) before anything else; v8 documents error_offset as
    output only and returns 0 (the range already has the attributes). Nothing changes
    either way.
    """
    with api.Vm(uapi.KVM_X86_SW_PROTECTED_VM) as vm:
        fd = vm.create_guest_memfd(uapi.PAGE_SIZE)
        arg = api.attrs2(
            0, uapi.PAGE_SIZE, uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE, error_offset=uapi.PAGE_SIZE
        )
        try:
            api.set_memory_attributes2(fd, arg)
        except OSError as exc:
            return "rejected" if exc.errno == errno.EINVAL else _errno_name(exc.errno)
    return "ignored"


def _vcpu_smoke() -> None:
    """Child body: a default VM runs the mini guest over plain memory."""
    with api.Vm() as vm:
        guest = MiniGuest(vm)
        guest.boot.write_byte(SCRATCH_GPA, 0x5A)
        result = guest.access(SCRATCH_GPA, 0xA5)
        if result.exit is not None or result.value != 0x5A:
            raise RuntimeError(
                f"guest did not complete a read/write of plain memory: value={result.value} "
                f"{result.exit.describe() if result.exit else ''}"
            )
        if guest.boot.read_byte(SCRATCH_GPA) != 0xA5:
            raise RuntimeError("guest write to plain memory not visible to the host")


def _probe_vcpus() -> tuple[bool, str]:
    try:
        result = child.run_in_child(_vcpu_smoke, VCPU_PROBE_TIMEOUT)
    except child.ChildTimeout:
        return (
            False,
            f"vCPUs do not run: a HLT/OUT guest did not exit within {VCPU_PROBE_TIMEOUT:.0f}s",
        )
    if result.exit_code == 0:
        return True, "a long-mode guest ran and reported through port I/O"
    last = result.message.strip().splitlines()[-1:] or [result.describe()]
    return False, f"vCPUs do not run: {last[0]}"


def _numa_nodes() -> int:
    """Nodes usable for mbind: 1 unless NUMA syscalls work and node ids reach >= 1."""
    return numa.max_node() + 1 if numa.is_multi_numa_node_system() else 1


def _thp_pmd_size() -> int:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 0


def probe(run_vcpus: bool = True) -> Features:
    feats = Features(kernel=platform.release(), page_size=os.sysconf("SC_PAGE_SIZE"))
    feats.numa_nodes = _numa_nodes()
    feats.thp_pmd_size = _thp_pmd_size()
    feats.vm_memory_attributes_param = _read_param("vm_memory_attributes")
    feats.gmem_in_place_conversion_param = _read_param("gmem_in_place_conversion")
    feats.gup_test = gup.available()
    try:
        kvm_fd = api.open_kvm()
    except OSError as exc:
        feats.kvm_error = f"{api.DEV_KVM}: {exc.strerror}"
        return feats
    try:
        feats.kvm = True
        feats.guest_memfd = api.check_extension(kvm_fd, uapi.KVM_CAP_GUEST_MEMFD) > 0
        types_mask = api.check_extension(kvm_fd, uapi.KVM_CAP_VM_TYPES) or 1
        feats.vm_types = [t for t in range(32) if types_mask & (1 << t)]
        try:
            candidates = _probe_gmem_attributes_cap(kvm_fd, feats.sw_protected)
            feats.gmem_attributes_cap_candidates = candidates
            feats.gmem_attributes_cap = candidates[0] if len(candidates) == 1 else None
        except OSError as exc:
            feats.probe_errors.append(f"capability scan: {exc}")
    finally:
        os.close(kvm_fd)
    for vm_type in feats.vm_types:
        name = uapi.VM_TYPE_NAMES.get(vm_type, str(vm_type))
        try:
            with api.Vm(vm_type) as vm:
                feats.gmem_flags[name] = vm.gmem_supported_flags()
                feats.vm_attributes[name] = vm.check_extension(uapi.KVM_CAP_MEMORY_ATTRIBUTES)
        except OSError as exc:
            # e.g. TDX/SEV types need setup the suite does not do
            feats.probe_errors.append(f"VM type {name}: {exc}")
    if feats.guest_memfd:
        try:
            with api.Vm() as vm:
                feats.attrs2_vm, feats.attrs2_vm_errno = _probe_attrs2(vm.fd)
                gmem = vm.create_guest_memfd(uapi.PAGE_SIZE)
                feats.attrs2_gmem, feats.attrs2_gmem_errno = _probe_attrs2(gmem)
        except OSError as exc:
            feats.probe_errors.append(f"KVM_SET_MEMORY_ATTRIBUTES2 probe: {exc}")
        if feats.attrs2_gmem and feats.sw_protected:
            feats.content_modes = _probe_content_modes()
            try:
                feats.error_offset_input = _probe_error_offset_input()
            except OSError as exc:
                feats.probe_errors.append(f"error_offset input probe: {exc}")
    if run_vcpus:
        try:
            feats.vcpus_run, feats.vcpus_run_reason = _probe_vcpus()
        except OSError as exc:
            feats.vcpus_run_reason = f"vCPU probe failed: {exc}"
    else:
        feats.vcpus_run_reason = "vCPU probe not run"
    return feats
