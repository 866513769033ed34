"""Shared test helpers: the session's probed features and skip-with-reason requirements."""

import gzip

import pytest
from kvm import api, uapi
from kvm.probe import Features, probe

_features: Features | None = None


def get_features() -> Features:
    """The session's probe result (probed once, on first use)."""
    global _features
    if _features is None:
        _features = probe()
    return _features


# --- requirements: each skip names the missing feature ------------------------------


def require_kvm(feats: Features) -> None:
    if not feats.kvm:
        pytest.skip(f"/dev/kvm not usable ({feats.kvm_error})")
    if not feats.guest_memfd:
        pytest.skip("guest_memfd (KVM_CAP_GUEST_MEMFD) not supported")


def require_vm_type(feats: Features, vm_type: int) -> None:
    require_kvm(feats)
    if vm_type not in feats.vm_types:
        pytest.skip(f"VM type {uapi.VM_TYPE_NAMES.get(vm_type, vm_type)} not supported")


def require_gmem_flags(feats: Features, vm_type: int, flags: int) -> None:
    require_vm_type(feats, vm_type)
    name = uapi.VM_TYPE_NAMES.get(vm_type, str(vm_type))
    missing = flags & ~feats.gmem_flags.get(name, 0)
    if missing:
        names = [
            n
            for bit, n in (
                (uapi.GUEST_MEMFD_FLAG_MMAP, "GUEST_MEMFD_FLAG_MMAP"),
                (uapi.GUEST_MEMFD_FLAG_INIT_SHARED, "GUEST_MEMFD_FLAG_INIT_SHARED"),
            )
            if missing & bit
        ] or [hex(missing)]
        pytest.skip(f"{'|'.join(names)} not supported for {name} VMs")


def require_vcpus(feats: Features) -> None:
    require_kvm(feats)
    if not feats.vcpus_run:
        pytest.skip(feats.vcpus_run_reason or "vCPUs do not run")


def require_attrs2(feats: Features) -> None:
    require_kvm(feats)
    if not feats.attrs2_gmem:
        why = "KVM_SET_MEMORY_ATTRIBUTES2 not supported"
        why += f" (guest_memfd ioctl: {feats.attrs2_gmem_errno or 'not probed'})"
        if feats.gmem_in_place_conversion_param == "N":
            # v8: kvm_gmem_ioctl() returns ENOTTY unless gmem_in_place_conversion.
            why += "; kvm.gmem_in_place_conversion=N, attributes are tracked per VM"
        elif feats.vm_memory_attributes_param == "Y":
            why += "; kvm.vm_memory_attributes=Y, attributes are tracked per VM"
        pytest.skip(why)


def require_conversions(feats: Features) -> None:
    """What guest_memfd_conversions_test's main() requires: SW_PROTECTED + gmem attributes."""
    require_attrs2(feats)
    if not feats.sw_protected:
        pytest.skip("VM type sw_protected not supported")
    flags = feats.gmem_flags.get("sw_protected", 0)
    if not flags & uapi.GUEST_MEMFD_FLAG_MMAP:
        pytest.skip("GUEST_MEMFD_FLAG_MMAP not supported for sw_protected VMs")


def require_vm_attributes(feats: Features, vm_type: int) -> None:
    """Per-VM KVM_SET_MEMORY_ATTRIBUTES with PRIVATE (mainline; off with per-gmem attributes)."""
    require_vm_type(feats, vm_type)
    name = uapi.VM_TYPE_NAMES.get(vm_type, str(vm_type))
    if not feats.vm_attributes.get(name, 0) & uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE:
        pytest.skip(f"per-VM KVM_SET_MEMORY_ATTRIBUTES(PRIVATE) not supported for {name} VMs")


def set_private(
    feats: Features, vm_fd: int, gmem_fd: int, gpa: int, offset: int, size: int, private: bool
) -> None:
    """Make a range private/shared the way vm_mem_set_memory_attributes() does.

    With per-gmem attributes (the series) through the guest_memfd ioctl, else
    through the per-VM ioctl.
    """
    attributes = uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE if private else 0
    if feats.per_gmem_attributes:
        api.gmem_set_attributes(gmem_fd, offset, size, attributes)
    else:
        api.set_memory_attributes(vm_fd, gpa, size, attributes)


def require_content_modes(feats: Features) -> None:
    """Content modes (ZERO/PRESERVE flags) exist in RFC v3..v5 only; v6+ takes flags == 0."""
    if not feats.any_content_mode:
        pytest.skip(
            "content modes not supported: this kernel refuses KVM_SET_MEMORY_ATTRIBUTES2 "
            "flags ZERO and PRESERVE in both directions (they exist in RFC v3-v5 only)"
        )


def kernel_config(symbol: str) -> str | None:
    """CONFIG_<symbol> of the running kernel from /proc/config.gz ("y", "m", "n"), or None.

    "n" when the file exists and says "is not set" or does not name the symbol.
    """
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            text = f.read()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(f"CONFIG_{symbol}="):
            return line.split("=", 1)[1]
    return "n"
