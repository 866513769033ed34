"""Binding guest_memfd to memslots (KVM_SET_USER_MEMORY_REGION2), 7.3 semantics.

Beyond guest_memfd_test.c's single invalid-binding check: the validation in
kvm_set_memory_region() and kvm_gmem_bind() (alignment, bounds, overlap of
GPA and of guest_memfd ranges, foreign VMs, flag combinations, immutability),
several guest_memfds per VM, and the guest_memfd outliving its VM fd.
"""

import errno
import os
from collections.abc import Callable, Iterator
from functools import partial

import pytest
from gmemsuite import require_gmem_flags, require_kvm
from kvm import api, child, libc, uapi
from kvm.libc import Mapping
from kvm.probe import Features

PAGE = uapi.PAGE_SIZE
GPA = 4 << 30
SIZE = 4 * PAGE
GMEM = uapi.KVM_MEM_GUEST_MEMFD


@pytest.fixture
def vm(features: Features) -> Iterator[api.Vm]:
    require_kvm(features)
    with api.Vm() as machine:
        yield machine


def _bind(
    vm: api.Vm, slot: int, gpa: int, size: int, fd: int, offset: int = 0, flags: int = GMEM
) -> None:
    api.set_user_memory_region2(vm.fd, slot, flags, gpa, size, 0, fd, offset)


def _expect_errno(expected: int, what: str, fn: Callable[[], None]) -> None:
    try:
        fn()
    except OSError as exc:
        assert exc.errno == expected, f"{what}: expected {errno.errorcode[expected]}, got {exc}"
    else:
        raise AssertionError(f"{what}: accepted, expected {errno.errorcode[expected]}")


def test_binding_valid_offsets(vm: api.Vm) -> None:
    fd = vm.create_guest_memfd(SIZE)
    _bind(vm, 1, GPA, PAGE, fd, 0)
    _bind(vm, 2, GPA + PAGE, 2 * PAGE, fd, PAGE)
    _bind(vm, 3, GPA + 3 * PAGE, PAGE, fd, 3 * PAGE)


def test_binding_whole_file_then_delete_and_rebind(vm: api.Vm) -> None:
    fd = vm.create_guest_memfd(SIZE)
    _bind(vm, 1, GPA, SIZE, fd)
    vm.delete_region(1)
    # Deleting the slot must release the guest_memfd range for a new binding.
    _bind(vm, 2, GPA + SIZE, SIZE, fd)


def test_binding_unaligned_offset(vm: api.Vm) -> None:
    fd = vm.create_guest_memfd(SIZE)
    for off in (1, PAGE - 1, PAGE + 8):
        _expect_errno(errno.EINVAL, f"offset {off:#x}", partial(_bind, vm, 1, GPA, PAGE, fd, off))


def test_binding_beyond_file_size(vm: api.Vm) -> None:
    fd = vm.create_guest_memfd(SIZE)
    _expect_errno(errno.EINVAL, "size > file", lambda: _bind(vm, 1, GPA, 2 * SIZE, fd))
    _expect_errno(errno.EINVAL, "offset+size > file", lambda: _bind(vm, 1, GPA, SIZE, fd, PAGE))
    _expect_errno(errno.EINVAL, "offset == file size", lambda: _bind(vm, 1, GPA, PAGE, fd, SIZE))


def test_binding_offset_size_wraps(vm: api.Vm) -> None:
    # offset + size wraps past 2^64: rejected by kvm_set_memory_region() itself.
    fd = vm.create_guest_memfd(SIZE)
    offset = (1 << 64) - PAGE
    _expect_errno(errno.EINVAL, "wrapping offset", lambda: _bind(vm, 1, GPA, SIZE, fd, offset))


def test_binding_overlapping_gmem_range(vm: api.Vm) -> None:
    fd = vm.create_guest_memfd(SIZE)
    _bind(vm, 1, GPA, 2 * PAGE, fd, 0)
    # 7.3 (kvm_gmem_commit_memory_region) says EEXIST; up to 6.18 kvm_gmem_bind()
    # said EINVAL. The errno moved on purpose upstream; accepting the binding is the bug.
    with pytest.raises(OSError) as info:
        _bind(vm, 2, GPA + SIZE, 2 * PAGE, fd, PAGE)
        pytest.fail("second slot on an already-bound guest_memfd range was accepted")
    print(f"overlapping guest_memfd binding rejected with {info.value}")
    assert info.value.errno in (errno.EEXIST, errno.EINVAL), info.value
    _bind(vm, 3, GPA + SIZE, 2 * PAGE, fd, 2 * PAGE)  # the disjoint rest is fine


def test_binding_overlapping_gpa(vm: api.Vm) -> None:
    fd1 = vm.create_guest_memfd(SIZE)
    fd2 = vm.create_guest_memfd(SIZE)
    _bind(vm, 1, GPA, SIZE, fd1)
    _expect_errno(errno.EEXIST, "overlapping GPA", lambda: _bind(vm, 2, GPA + PAGE, SIZE, fd2))


def test_binding_foreign_vm_gmem(vm: api.Vm) -> None:
    with api.Vm() as other:
        fd = other.create_guest_memfd(SIZE)
        _expect_errno(
            errno.EINVAL, "guest_memfd of another VM", lambda: _bind(vm, 1, GPA, SIZE, fd)
        )


def test_binding_not_a_gmem_fd(vm: api.Vm) -> None:
    r, w = os.pipe()
    try:
        _expect_errno(errno.EINVAL, "pipe as guest_memfd", lambda: _bind(vm, 1, GPA, SIZE, r))
    finally:
        os.close(r)
        os.close(w)
    _expect_errno(errno.EINVAL, "VM fd as guest_memfd", lambda: _bind(vm, 1, GPA, SIZE, vm.fd))
    _expect_errno(errno.EBADF, "closed fd", lambda: _bind(vm, 1, GPA, SIZE, 1 << 20))
    # KVM's other files too. A vCPU file is the dangerous one: its private_data starts
    # with the same struct kvm pointer a gmem_file does, so it would pass the VM check
    # if the f_op comparison let it through. (Mutant 64f92a59fbb2, `f_op > &kvm_gmem_fops`,
    # still survives this: the vCPU's anonymous inode has size 0, so the size check
    # refuses it with the same EINVAL; tests/guest/mutation has the argument.)
    vcpu_fd = api.ioctl_int(vm.fd, uapi.KVM_CREATE_VCPU, 0)
    kvm_fd = api.open_kvm()
    try:
        for what, fd in (("vCPU fd", vcpu_fd), ("/dev/kvm fd", kvm_fd)):
            _expect_errno(
                errno.EINVAL,
                f"{what} as guest_memfd",
                lambda fd=fd: _bind(vm, 1, GPA, SIZE, fd),  # type: ignore[misc]
            )
    finally:
        os.close(vcpu_fd)
        os.close(kvm_fd)


def _expect_overlap_refused(what: str, fn: Callable[[], None]) -> None:
    # EEXIST since 7.3 (kvm_gmem_commit_memory_region), EINVAL before: see
    # test_binding_overlapping_gmem_range. Accepting the binding is the bug.
    try:
        fn()
    except OSError as exc:
        assert exc.errno in (errno.EEXIST, errno.EINVAL), f"{what}: {exc}"
    else:
        raise AssertionError(f"{what}: accepted, expected EEXIST")


def test_unbind_releases_only_its_range(vm: api.Vm) -> None:
    """Deleting a slot releases its guest_memfd range and nothing beyond it.

    kvm_gmem_unbind() clears the file's bindings over [start, end - 1]. Clearing past
    the end (mutant d6a57adecd8e: `end - -1`) silently unbinds the neighbouring slot's
    pages, so a third slot may bind over them; clearing too little (c1a4f6d721fa:
    `end % 1`) leaves stale pointers to the deleted slot and the range never binds again.
    That one needs a slot that does not start at file offset 0: the bindings xarray
    keeps an aligned range as one multi-index entry, and clearing its first index
    clears it all, so a slot at offset 0 is released even by the broken bound.
    """
    fd = vm.create_guest_memfd(SIZE)
    _bind(vm, 1, GPA, 2 * PAGE, fd, 0)
    _bind(vm, 2, GPA + 2 * PAGE, 2 * PAGE, fd, 2 * PAGE)
    vm.delete_region(1)
    _expect_overlap_refused(
        "a slot over the remaining slot's first page",
        lambda: _bind(vm, 3, GPA + SIZE, PAGE, fd, 2 * PAGE),
    )
    _bind(vm, 3, GPA + SIZE, 2 * PAGE, fd, 0)  # the released range binds again
    vm.delete_region(2)  # a slot at file offset 2 pages
    _bind(vm, 4, GPA + SIZE + 2 * PAGE, 2 * PAGE, fd, 2 * PAGE)  # its range binds again


def test_punch_hole_beside_a_binding(vm: api.Vm) -> None:
    """A hole punched just below a bound range leaves the VM working.

    kvm_gmem_punch_hole() brackets the truncation with invalidate_start() and
    invalidate_end(), each looking for bindings in [start, end - 1]: they must agree.
    An end that looks one page further (mutant 984f872d08d0: `end / 1`) ends an
    invalidation that never began; mmu_invalidate_in_progress goes negative and
    KVM_BUG_ON kills the VM (a WARN in dmesg, EIO from every later VM ioctl).
    """
    fd = vm.create_guest_memfd(SIZE)
    _bind(vm, 1, GPA + 2 * PAGE, 2 * PAGE, fd, 2 * PAGE)
    libc.fallocate(fd, libc.FALLOC_FL_KEEP_SIZE, 0, SIZE)
    libc.punch_hole(fd, 0, 2 * PAGE)
    _bind(vm, 2, GPA, 2 * PAGE, fd, 0)  # a dead VM answers EIO here


@pytest.mark.parametrize(
    "extra", [uapi.KVM_MEM_LOG_DIRTY_PAGES, uapi.KVM_MEM_READONLY], ids=["dirty_log", "readonly"]
)
def test_binding_incompatible_flags(vm: api.Vm, extra: int) -> None:
    fd = vm.create_guest_memfd(SIZE)
    _expect_errno(
        errno.EINVAL,
        f"GUEST_MEMFD|{extra:#x}",
        lambda: _bind(vm, 1, GPA, SIZE, fd, flags=GMEM | extra),
    )


def test_binding_is_immutable(vm: api.Vm) -> None:
    fd = vm.create_guest_memfd(2 * SIZE)
    _bind(vm, 1, GPA, SIZE, fd)
    _expect_errno(
        errno.EINVAL, "moving a guest_memfd slot", lambda: _bind(vm, 1, GPA + SIZE, SIZE, fd)
    )
    _expect_errno(
        errno.EINVAL, "re-adding the same slot", lambda: _bind(vm, 1, GPA, SIZE, fd, SIZE)
    )


def test_multiple_gmems_per_vm(vm: api.Vm, features: Features) -> None:
    """Several guest_memfds bound side by side keep separate contents."""
    require_gmem_flags(
        features, vm.vm_type, uapi.GUEST_MEMFD_FLAG_MMAP | uapi.GUEST_MEMFD_FLAG_INIT_SHARED
    )
    flags = uapi.GUEST_MEMFD_FLAG_MMAP | uapi.GUEST_MEMFD_FLAG_INIT_SHARED
    fds = [vm.create_guest_memfd(SIZE, flags) for _ in range(3)]
    for i, fd in enumerate(fds):
        _bind(vm, 10 + i, GPA + i * SIZE, SIZE, fd)

    def body() -> None:
        maps = [Mapping(SIZE, fd=fd) for fd in fds]
        for i, m in enumerate(maps):
            m.fill(0, SIZE, 0x10 + i)
        for i, m in enumerate(maps):
            assert m.read(0, SIZE) == bytes([0x10 + i]) * SIZE, f"guest_memfd {i} contents"

    child.expect_ok("separate guest_memfd contents", body)
    assert len({os.fstat(fd).st_ino for fd in fds}) == 3


def test_gmem_outlives_vm_fd(features: Features) -> None:
    """The guest_memfd holds a reference on its VM: closing the VM fd must not break it."""
    require_kvm(features)
    flags = uapi.GUEST_MEMFD_FLAG_MMAP | uapi.GUEST_MEMFD_FLAG_INIT_SHARED
    require_gmem_flags(features, uapi.KVM_X86_DEFAULT_VM, flags)
    vm = api.Vm()
    fd = vm.create_guest_memfd(SIZE, flags, own=False)
    try:
        _bind(vm, 1, GPA, SIZE, fd)
        vm.close()  # the VM fd and /dev/kvm fd are gone; fd now owns the last VM ref
        assert os.fstat(fd).st_size == SIZE
        libc.fallocate(fd, libc.FALLOC_FL_KEEP_SIZE, 0, SIZE)
        libc.punch_hole(fd, 0, PAGE)

        def body() -> None:
            m = Mapping(SIZE, fd=fd)
            m.fill(0, SIZE, 0x5A)
            assert m.read(0, SIZE) == b"\x5a" * SIZE

        child.expect_ok("guest_memfd mmap after the VM fd closed", body)
    finally:
        os.close(fd)


def test_gmem_closed_while_bound(vm: api.Vm) -> None:
    """Closing a bound guest_memfd invalidates the binding; deleting the slot still works."""
    fd = vm.create_guest_memfd(SIZE, own=False)
    _bind(vm, 1, GPA, SIZE, fd)
    os.close(fd)
    vm.delete_region(1)
    fd2 = vm.create_guest_memfd(SIZE)
    _bind(vm, 1, GPA, SIZE, fd2)
