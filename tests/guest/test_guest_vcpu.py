"""Guest-side checks with a running vCPU (the minimal guest of kvm/guest.py).

Counterparts: guest_memfd_test.c test_guest_memfd_guest (7.3) and
test_guest_private_mem (series v3), x86/private_mem_kvm_exits_test.c, and the
basic flow of x86/private_mem_conversions_test.c over per-VM attributes.
"""

import pytest
from gmemsuite import (
    require_gmem_flags,
    require_vcpus,
    require_vm_attributes,
    require_vm_type,
    set_private,
)
from kvm import api, child, libc, uapi
from kvm.guest import DATA_GPA, MiniGuest
from kvm.libc import Mapping
from kvm.probe import Features

PAGE = uapi.PAGE_SIZE
SW = uapi.KVM_X86_SW_PROTECTED_VM
PRIVATE = uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE


@pytest.fixture
def guest_factory(features: Features):  # type: ignore[no-untyped-def]
    """Build (vm, guest) pairs and tear them down after the test."""
    require_vcpus(features)
    made: list[tuple[api.Vm, MiniGuest]] = []

    def make(vm_type: int = uapi.KVM_X86_DEFAULT_VM) -> tuple[api.Vm, MiniGuest]:
        vm = api.Vm(vm_type)
        made.append((vm, MiniGuest(vm)))
        return made[-1]

    yield make
    for vm, guest in made:
        guest.close()
        vm.close()


def _require_private(features: Features) -> None:
    require_vm_type(features, SW)
    if features.per_gmem_attributes:
        return
    require_vm_attributes(features, SW)


def test_guest_memfd_guest(features: Features, guest_factory) -> None:  # type: ignore[no-untyped-def]
    """Default VM, MMAP|INIT_SHARED guest_memfd as the only backing: host and guest share it."""
    flags = uapi.GUEST_MEMFD_FLAG_MMAP | uapi.GUEST_MEMFD_FLAG_INIT_SHARED
    require_gmem_flags(features, uapi.KVM_X86_DEFAULT_VM, flags)
    vm, guest = guest_factory()
    size = PAGE
    fd = vm.create_guest_memfd(size, flags)
    vm.set_region(1, DATA_GPA, size, userspace_addr=0, guest_memfd=fd)

    child.expect_ok("host memset 0xaa", lambda: Mapping(size, fd=fd).fill(0, size, 0xAA))
    guest.check_and_fill(DATA_GPA, size, 0xAA, 0xFF)

    def host_sees_ff() -> None:
        assert Mapping(size, fd=fd).read(0, size) == b"\xff" * size, "host must see guest's 0xff"

    child.expect_ok("host reads the guest's writes", host_sees_ff)


def test_guest_sees_each_page_and_punched_holes(features: Features, guest_factory) -> None:  # type: ignore[no-untyped-def]
    """A slot bound at a guest_memfd offset maps each gfn to its own page, and a hole the
    host punches reaches the guest.

    kvm_gmem_get_pfn() turns the gfn into a file index and folio_file_pfn() into the pfn
    of that page; an index rounding bug (mutant 00ac80edc2bf: `& (nr_pages / 1)`) shifts
    every odd page to the next pfn. Punching a hole must zap the guest's mapping of the
    range: __kvm_gmem_invalidate_start() computes the gfns from the slot's file offset,
    and with offset >= the slot's size a wrong bound (788795897397: `pgoff - npages`)
    zaps nothing, so the guest keeps reading the freed page.
    """
    flags = uapi.GUEST_MEMFD_FLAG_MMAP | uapi.GUEST_MEMFD_FLAG_INIT_SHARED
    require_gmem_flags(features, uapi.KVM_X86_DEFAULT_VM, flags)
    vm, guest = guest_factory()
    pages = 4
    fd = vm.create_guest_memfd(pages * PAGE, flags)
    # Bound at file pages 2..3: file offset (2 pages) >= slot size (2 pages).
    vm.set_region(1, DATA_GPA, 2 * PAGE, guest_memfd=fd, guest_memfd_offset=2 * PAGE)

    def fill_each_page() -> None:
        mem = Mapping(pages * PAGE, fd=fd)
        for i in range(pages):
            mem.fill(i * PAGE, PAGE, 0x10 + i)

    child.expect_ok("host fills page i with 0x10 + i", fill_each_page)
    assert guest.read(DATA_GPA) == 0x12, "guest page 0 is not file page 2"
    assert guest.read(DATA_GPA + PAGE) == 0x13, "guest page 1 is not file page 3"
    libc.punch_hole(fd, 3 * PAGE, PAGE)
    assert guest.read(DATA_GPA + PAGE) == 0, "guest still reads the page the host punched out"
    assert guest.read(DATA_GPA) == 0x12, "the hole reached a page outside it"


def test_guest_private_mem(features: Features, guest_factory) -> None:  # type: ignore[no-untyped-def]
    """SW_PROTECTED VM: the guest writes/reads private memory; the shared backing never sees it."""
    _require_private(features)
    vm, guest = guest_factory(SW)
    fd = vm.create_guest_memfd(PAGE, 0)
    backing = Mapping(PAGE)  # the shared view (VM_MEM_SRC_SHMEM in the C test)
    backing.fill(0, PAGE, 0x11)
    vm.set_region(1, DATA_GPA, PAGE, userspace_addr=backing.addr, guest_memfd=fd)
    set_private(features, vm.fd, fd, DATA_GPA, 0, PAGE, True)

    guest.rmw(DATA_GPA, 0x00, 0xFF)  # fresh private page reads zero, not the backing's 0x11
    assert guest.read(DATA_GPA) == 0xFF
    assert backing.read(0, PAGE) == b"\x11" * PAGE, "private write leaked into shared backing"
    backing.unmap()


def test_vm_attributes_conversion(features: Features, guest_factory) -> None:  # type: ignore[no-untyped-def]
    """Per-VM attributes switch the guest between shared backing and guest_memfd."""
    require_vm_attributes(features, SW)
    vm, guest = guest_factory(SW)
    fd = vm.create_guest_memfd(PAGE, 0)
    backing = Mapping(PAGE)
    vm.set_region(1, DATA_GPA, PAGE, userspace_addr=backing.addr, guest_memfd=fd)

    backing.write_byte(0, 0xA1)
    guest.rmw(DATA_GPA, 0xA1, 0xB2)  # shared: guest sees the host's byte
    assert backing.read_byte(0) == 0xB2, "shared guest write not visible to host"
    api.set_memory_attributes(vm.fd, DATA_GPA, PAGE, PRIVATE)
    guest.rmw(DATA_GPA, 0x00, 0xC3)  # private: a zeroed guest_memfd page
    assert backing.read_byte(0) == 0xB2, "private guest write reached the shared backing"
    api.set_memory_attributes(vm.fd, DATA_GPA, PAGE, 0)
    guest.rmw(DATA_GPA, 0xB2, 0xD4)  # shared again: the backing, unchanged
    api.set_memory_attributes(vm.fd, DATA_GPA, PAGE, PRIVATE)
    assert guest.read(DATA_GPA) == 0xC3, "private contents lost across a shared round trip"
    backing.unmap()


def test_private_access_memslot_not_private(features: Features, guest_factory) -> None:  # type: ignore[no-untyped-def]
    """PRIVATE attribute on a memslot without guest_memfd -> KVM_EXIT_MEMORY_FAULT."""
    if features.per_gmem_attributes:
        pytest.skip(
            "per-guest_memfd attributes: a memslot without guest_memfd cannot be private "
            "(series v3+; v8's private_mem_kvm_exits_test skips this case the same way)"
        )
    require_vm_attributes(features, SW)
    vm, guest = guest_factory(SW)
    backing = Mapping(PAGE)
    vm.set_region(10, DATA_GPA, PAGE, userspace_addr=backing.addr)
    api.set_memory_attributes(vm.fd, DATA_GPA, PAGE, PRIVATE)
    result = guest.access(DATA_GPA)
    assert result.exit is not None, f"private access to a non-gmem slot read {result.value}"
    assert result.exit.reason == uapi.KVM_EXIT_MEMORY_FAULT, result.exit.describe()
    assert result.exit.fault_flags == uapi.KVM_MEMORY_EXIT_FLAG_PRIVATE
    assert result.exit.fault_gpa == DATA_GPA
    assert result.exit.fault_size == PAGE
    backing.unmap()


def test_private_access_memslot_deleted(features: Features, guest_factory) -> None:  # type: ignore[no-untyped-def]
    """Private GPA whose memslot is gone: MEMORY_FAULT (per-VM attrs) / MMIO (per-gmem attrs)."""
    _require_private(features)
    vm, guest = guest_factory(SW)
    fd = vm.create_guest_memfd(PAGE, 0)
    backing = Mapping(PAGE)
    vm.set_region(10, DATA_GPA, PAGE, userspace_addr=backing.addr, guest_memfd=fd)
    set_private(features, vm.fd, fd, DATA_GPA, 0, PAGE, True)
    guest.rmw(DATA_GPA, 0, 0x42)
    vm.delete_region(10)
    result = guest.access(DATA_GPA)
    assert result.exit is not None, f"access to a deleted memslot read {result.value}"
    if features.per_gmem_attributes:
        # No memslot means no guest_memfd, hence shared: emulated MMIO (v3 patch 37, v8 46;
        # v8 kvm_gmem_is_private() returns false for a gfn without memslot).
        assert result.exit.reason == uapi.KVM_EXIT_MMIO, result.exit.describe()
        assert result.exit.mmio_addr == DATA_GPA and not result.exit.mmio_is_write
    else:
        assert result.exit.reason == uapi.KVM_EXIT_MEMORY_FAULT, result.exit.describe()
        assert result.exit.fault_flags == uapi.KVM_MEMORY_EXIT_FLAG_PRIVATE
        assert result.exit.fault_gpa == DATA_GPA
        assert result.exit.fault_size == PAGE
    backing.unmap()
