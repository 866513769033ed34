"""Shared test helpers: the session's probed features and skip-with-reason requirements."""

import pytest

from kvm import uapi
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
    if not feats.vcpus_run:
        pytest.skip(feats.vcpus_run_reason or "vCPUs do not run")


def require_attrs2(feats: Features) -> None:
    require_kvm(feats)
    if not feats.attrs2_gmem:
        pytest.skip("KVM_SET_MEMORY_ATTRIBUTES2 not supported")


def require_conversions(feats: Features) -> None:
    """What guest_memfd_conversions_test's main() requires: SW_PROTECTED + gmem attributes."""
    require_attrs2(feats)
    if not feats.sw_protected:
        pytest.skip("VM type sw_protected not supported")
    flags = feats.gmem_flags.get("sw_protected", 0)
    if not flags & uapi.GUEST_MEMFD_FLAG_MMAP:
        pytest.skip("GUEST_MEMFD_FLAG_MMAP not supported for sw_protected VMs")
