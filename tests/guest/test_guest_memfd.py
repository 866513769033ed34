"""Baseline guest_memfd semantics of Linux 7.3, mirroring guest_memfd_test.c by name.

The C test runs every check for each VM type in KVM_CAP_VM_TYPES and for the
flag sets 0, MMAP and MMAP|INIT_SHARED; so do these, as parameters. Checks the
C test makes loosely ("should fail") are made with the errno 7.3 returns.
"""

import errno
import mmap
import os
from collections.abc import Iterator

import pytest
from gmemsuite import require_gmem_flags, require_vm_type
from kvm import api, child, libc, numa, uapi
from kvm.libc import Mapping
from kvm.probe import Features

PAGE = uapi.PAGE_SIZE
TOTAL = 4 * PAGE  # the C test's default guest_memfd size
MMAP = uapi.GUEST_MEMFD_FLAG_MMAP
SHARED = uapi.GUEST_MEMFD_FLAG_INIT_SHARED

VM_TYPES = [
    pytest.param(uapi.KVM_X86_DEFAULT_VM, id="default"),
    pytest.param(uapi.KVM_X86_SW_PROTECTED_VM, id="sw_protected"),
]
FLAG_SETS = [
    pytest.param(0, id="noflags"),
    pytest.param(MMAP, id="mmap"),
    pytest.param(MMAP | SHARED, id="mmap_shared"),
]


@pytest.fixture(params=VM_TYPES)
def vm(request: pytest.FixtureRequest, features: Features) -> Iterator[api.Vm]:
    require_vm_type(features, request.param)
    with api.Vm(request.param) as machine:
        yield machine


@pytest.fixture(params=FLAG_SETS)
def gmem_flags(request: pytest.FixtureRequest, vm: api.Vm, features: Features) -> int:
    flags: int = request.param
    require_gmem_flags(features, vm.vm_type, flags)
    return flags


@pytest.fixture
def gmem(vm: api.Vm, gmem_flags: int) -> int:
    return vm.create_guest_memfd(TOTAL, gmem_flags)


def _skip_unless(flags: int, want: int, reason: str) -> None:
    if flags & want != want:
        pytest.skip(reason)


# --- creation ---------------------------------------------------------------------


def test_create_guest_memfd_multiple(vm: api.Vm) -> None:
    fd1 = vm.create_guest_memfd(PAGE)
    st1 = os.fstat(fd1)
    assert st1.st_size == PAGE, "memfd st_size should match requested size"
    fd2 = vm.create_guest_memfd(2 * PAGE)
    st2 = os.fstat(fd2)
    assert st2.st_size == 2 * PAGE, "second memfd st_size should match requested size"
    st1 = os.fstat(fd1)
    assert st1.st_size == PAGE, "first memfd st_size should still match requested size"
    assert st1.st_ino != st2.st_ino, "different memfd should have different inode numbers"


INODE_CACHE = "/sys/kernel/slab/kvm_gmem_inode_cache"


def test_inode_cache_is_named(vm: api.Vm) -> None:
    """guest_memfd inodes come from their own slab cache, kvm_gmem_inode_cache.

    kvm_gmem_init() creates it by that name (a constructor keeps it from being merged),
    so /sys/kernel/slab and /proc/slabinfo account guest_memfd inodes on their own. An
    empty name (mutant d4df76cac88c) still boots with a WARN but the accounting is gone.
    """
    vm.create_guest_memfd(PAGE)
    if not os.path.isdir("/sys/kernel/slab"):
        pytest.skip("no /sys/kernel/slab (SLUB sysfs)")
    assert os.path.isdir(INODE_CACHE), f"{INODE_CACHE} is missing"


def test_create_guest_memfd_invalid_sizes(vm: api.Vm, gmem_flags: int) -> None:
    for size in range(1, PAGE):
        with pytest.raises(OSError) as info:
            fd = vm.create_guest_memfd(size, gmem_flags)
            os.close(fd)
        assert info.value.errno == errno.EINVAL, f"size {size:#x}: {info.value}"


@pytest.mark.parametrize("size", [0, -PAGE, 1 << 63], ids=["zero", "negative", "loff_max_plus1"])
def test_create_guest_memfd_nonpositive_size(vm: api.Vm, size: int) -> None:
    # kvm_gmem_create: `size <= 0` (loff_t) -> EINVAL; 1<<63 is negative as loff_t.
    with pytest.raises(OSError) as info:
        vm.create_guest_memfd(size)
    assert info.value.errno == errno.EINVAL


def test_guest_memfd_flags(vm: api.Vm) -> None:
    valid = vm.gmem_supported_flags()
    for bit in range(64):
        flag = 1 << bit
        if flag & valid:
            fd = api.create_guest_memfd(vm.fd, PAGE, flag)
            os.close(fd)
        else:
            with pytest.raises(OSError) as info:
                os.close(api.create_guest_memfd(vm.fd, PAGE, flag))
            assert info.value.errno == errno.EINVAL, f"flag {flag:#x}: {info.value}"


def test_guest_memfd_flags_cap_consistent(vm: api.Vm) -> None:
    """MMAP is always supported with INIT_SHARED (the C test's stated invariant)."""
    valid = vm.gmem_supported_flags()
    if valid & SHARED:
        assert valid & MMAP, f"INIT_SHARED without MMAP in KVM_CAP_GUEST_MEMFD_FLAGS={valid:#x}"
    if vm.vm_type == uapi.KVM_X86_DEFAULT_VM:
        assert valid & (MMAP | SHARED) == MMAP | SHARED, (
            f"default VM should support MMAP|INIT_SHARED, got {valid:#x}"
        )


@pytest.mark.parametrize("index", range(6))
def test_create_guest_memfd_reserved_ignored(vm: api.Vm, index: int) -> None:
    # 7.3 never reads kvm_create_guest_memfd.reserved[]: a nonzero value must not
    # change the result. A kernel that starts rejecting it breaks the ABI.
    values = [0] * 6
    values[index] = 0xDEAD
    fd = api.create_guest_memfd(vm.fd, PAGE, 0, tuple(values))
    try:
        assert os.fstat(fd).st_size == PAGE
    finally:
        os.close(fd)


# --- file operations -----------------------------------------------------------------


def test_file_read_write(gmem: int) -> None:
    buf = bytearray(64)
    for name, call in (
        ("read", lambda: os.read(gmem, 64)),
        ("write", lambda: os.write(gmem, bytes(buf))),
        ("pread", lambda: os.pread(gmem, 64, 0)),
        ("pwrite", lambda: os.pwrite(gmem, bytes(buf), 0)),
    ):
        with pytest.raises(OSError):
            call()
            pytest.fail(f"{name} on a guest_mem fd should fail")


def test_file_size(gmem: int) -> None:
    st = os.fstat(gmem)
    assert st.st_size == TOTAL
    assert st.st_blksize == PAGE


def test_unknown_ioctl_enotty(gmem: int) -> None:
    # No ioctl of the suite's numbers other than the series' may be accepted.
    with pytest.raises(OSError) as info:
        api.ioctl_int(gmem, uapi.KVM_CHECK_EXTENSION, uapi.KVM_CAP_GUEST_MEMFD)
    assert info.value.errno == errno.ENOTTY


# --- mmap -----------------------------------------------------------------------------


def test_mmap_not_supported(gmem: int, gmem_flags: int) -> None:
    if gmem_flags & MMAP:
        pytest.skip("only for guest_memfd without GUEST_MEMFD_FLAG_MMAP")
    for size in (PAGE, TOTAL):
        with pytest.raises(OSError) as info:
            Mapping(size, fd=gmem)
        assert info.value.errno == errno.ENODEV, f"mmap of {size:#x}: {info.value}"


def test_mmap_cow(gmem: int, gmem_flags: int) -> None:
    _skip_unless(gmem_flags, MMAP, "needs GUEST_MEMFD_FLAG_MMAP")
    with pytest.raises(OSError) as info:
        Mapping(TOTAL, flags=mmap.MAP_PRIVATE, fd=gmem)
    assert info.value.errno == errno.EINVAL, "Copy-on-write not allowed by guest_memfd."


def test_mmap_supported(gmem: int, gmem_flags: int) -> None:
    _skip_unless(gmem_flags, MMAP | SHARED, "needs GUEST_MEMFD_FLAG_MMAP|INIT_SHARED")
    val = 0xAA

    def body() -> None:
        mem = Mapping(TOTAL, fd=gmem)
        mem.fill(0, TOTAL, val)
        assert mem.read(0, TOTAL) == bytes([val]) * TOTAL
        libc.punch_hole(gmem, 0, PAGE)
        assert mem.read(0, PAGE) == bytes(PAGE), "punched page should read zeros"
        assert mem.read(PAGE, TOTAL - PAGE) == bytes([val]) * (TOTAL - PAGE)
        mem.fill(0, PAGE, val)
        assert mem.read(0, TOTAL) == bytes([val]) * TOTAL
        mem.unmap()

    child.expect_ok("mmap_supported", body)


def _fault_sigbus(gmem: int, accessible: int, map_size: int) -> None:
    val = 0xAA

    def fill_all() -> None:
        Mapping(map_size, fd=gmem).fill(0, map_size, val)

    def read_past() -> None:
        Mapping(map_size, fd=gmem).read_byte(accessible)

    child.expect_sigbus("memset(mem, val, map_size)", fill_all)
    child.expect_sigbus("READ_ONCE(mem[accessible_size])", read_past)
    # Every page past the end, not only the first: kvm_gmem_fault_user_mapping() must
    # refuse any pgoff at or beyond i_size. A `>=` weakened to `==` (mutant 40f1f542a1a6)
    # still SIGBUSes at the first page and then hands out page-cache folios past EOF.
    for off in range(accessible + PAGE, map_size, PAGE):
        child.expect_sigbus(
            f"READ_ONCE(mem[{off:#x}]) past the end",
            lambda off=off: Mapping(map_size, fd=gmem).read_byte(off),
        )

    def check() -> None:
        mem = Mapping(map_size, fd=gmem)
        assert mem.read(0, accessible) == bytes([val]) * accessible

    if accessible:
        child.expect_ok("accessible bytes hold the value", check)


def test_fault_overflow(gmem: int, gmem_flags: int) -> None:
    _skip_unless(gmem_flags, MMAP | SHARED, "needs GUEST_MEMFD_FLAG_MMAP|INIT_SHARED")
    _fault_sigbus(gmem, TOTAL, TOTAL * 4)


def test_fault_private(gmem: int, gmem_flags: int, features: Features) -> None:
    if gmem_flags != MMAP:
        pytest.skip("only for GUEST_MEMFD_FLAG_MMAP without INIT_SHARED")
    _fault_sigbus(gmem, 0, TOTAL)


def test_collapse(vm: api.Vm, gmem_flags: int, features: Features) -> None:
    _skip_unless(gmem_flags, MMAP | SHARED, "needs GUEST_MEMFD_FLAG_MMAP|INIT_SHARED")
    pmd = features.thp_pmd_size
    if not pmd:
        pytest.skip("transparent hugepages not available (no hpage_pmd_size)")
    fd = vm.create_guest_memfd(pmd, gmem_flags)

    def body() -> None:
        reserved = Mapping(2 * pmd, prot=libc.PROT_NONE, flags=mmap.MAP_PRIVATE)
        aligned = (reserved.addr + pmd - 1) & ~(pmd - 1)
        mem = Mapping(pmd, flags=mmap.MAP_SHARED | libc.MAP_FIXED, fd=fd, addr=aligned)
        assert mem.addr == aligned, "Userspace address must be aligned to PMD size."
        for off in range(0, pmd, PAGE):
            mem.read_byte(off)  # populate with reads: no dirty bits
        libc.madvise(mem.addr, pmd, libc.MADV_HUGEPAGE)
        try:
            libc.madvise(mem.addr, pmd, libc.MADV_COLLAPSE)
        except OSError as exc:
            assert exc.errno == errno.EINVAL, f"MADV_COLLAPSE: {exc}"
        else:
            raise AssertionError("MADV_COLLAPSE on guest_memfd should fail with EINVAL")
        libc.madvise(mem.addr, pmd, libc.MADV_DONTNEED)
        mem.read_byte(0)

    child.expect_ok("collapse", body)


def _require_numa(features: Features) -> None:
    if features.numa_nodes < 2:
        pytest.skip("needs a multi-NUMA-node system")


def test_mbind(gmem: int, gmem_flags: int, features: Features) -> None:
    _skip_unless(gmem_flags, MMAP, "needs GUEST_MEMFD_FLAG_MMAP")
    _require_numa(features)

    def body() -> None:
        mem = Mapping(TOTAL, fd=gmem)
        maxnode = 64
        numa.mbind(mem.addr, PAGE * 2, numa.MPOL_INTERLEAVE, 1, maxnode)
        policy = numa.get_mempolicy(mem.addr, maxnode)
        assert policy == (numa.MPOL_INTERLEAVE, 1), f"Wanted MPOL_INTERLEAVE and 0x1, got {policy}"
        numa.mbind(mem.addr + PAGE * 2, PAGE * 2, numa.MPOL_BIND, 1, maxnode)
        policy = numa.get_mempolicy(mem.addr + PAGE * 2, maxnode)
        assert policy == (numa.MPOL_BIND, 1), f"Wanted MPOL_BIND and 0x1, got {policy}"
        numa.mbind(mem.addr, TOTAL, numa.MPOL_DEFAULT, None, 0)
        policy = numa.get_mempolicy(mem.addr, maxnode)
        assert policy == (numa.MPOL_DEFAULT, 0), f"Wanted MPOL_DEFAULT and 0x0, got {policy}"
        try:
            numa.mbind(mem.addr, PAGE, 999, 1, maxnode)
        except OSError as exc:
            assert exc.errno == errno.EINVAL, exc
        else:
            raise AssertionError("mbind with invalid policy should fail with EINVAL")

    child.expect_ok("mbind", body)


POLICY_OBJECTS = "/sys/kernel/slab/numa_policy/objects"
POLICY_ROUNDS = 3000


def _policy_objects() -> int:
    with open(POLICY_OBJECTS) as counts:
        return int(counts.read().split()[0])


def test_mbind_policies_freed_with_the_file(vm: api.Vm, features: Features) -> None:
    """The NUMA policies mbind() sets on a guest_memfd go when the file goes.

    kvm_gmem_set_policy() keeps them in the inode's shared policy tree and
    kvm_gmem_destroy_inode() must free that tree (mpol_free_shared_policy); without it
    (mutant 86b2653c46e3) every mbind on a guest_memfd leaks its mempolicy objects. The
    numa_policy slab's object count shows it: 3000 files with one policy each leak
    3000 objects; the threshold leaves room for other users of a merged cache.
    """
    require_gmem_flags(features, vm.vm_type, MMAP)
    _require_numa(features)
    if not os.path.exists(POLICY_OBJECTS):
        pytest.skip(f"no {POLICY_OBJECTS} (needs SLUB with sysfs and CONFIG_SLUB_DEBUG)")

    # In this process: guest_memfds are created on the VM's fd, which KVM refuses from
    # another mm (EIO); mapping and mbind touch no page, so nothing can SIGBUS.
    before = _policy_objects()
    for _ in range(POLICY_ROUNDS):
        fd = vm.create_guest_memfd(PAGE, MMAP, own=False)
        try:
            mem = Mapping(PAGE, fd=fd)
            numa.mbind(mem.addr, PAGE, numa.MPOL_BIND, 1, 64)
            mem.unmap()
        finally:
            os.close(fd)
    grown = _policy_objects() - before
    assert grown < POLICY_ROUNDS // 3, (
        f"numa_policy objects grew by {grown} over {POLICY_ROUNDS} guest_memfds with "
        "one mbind each: their shared policies were not freed with the inode"
    )


def test_numa_allocation(gmem: int, gmem_flags: int, features: Features) -> None:
    _skip_unless(gmem_flags, MMAP | SHARED, "needs GUEST_MEMFD_FLAG_MMAP|INIT_SHARED")
    _require_numa(features)

    def body() -> None:
        mem = Mapping(TOTAL, fd=gmem)
        pages = [mem.addr + PAGE * i for i in range(4)]

        def bind(first: int, count: int, node: int) -> None:
            numa.mbind(pages[first], PAGE * count, numa.MPOL_BIND, 1 << node, maxnode=8)

        def allocate_on(low: int, high: int) -> None:
            """Pages 0-1 bound to node `low` and 2-3 to `high`, then allocated: they land there."""
            bind(0, 2, low)
            bind(2, 2, high)
            mem.fill(0, TOTAL, 0xAA)
            status, want = numa.move_pages_status(pages), [low, low, high, high]
            assert status == want, f"pages on nodes {status}, expected {want}"

        # Policy set after allocation does not move the page; the hole punch frees it.
        mem.fill(0, PAGE, 0xAA)
        bind(0, 1, 0)
        libc.punch_hole(gmem, 0, PAGE)
        # Policy set before allocation decides where pages land.
        allocate_on(1, 0)
        libc.punch_hole(gmem, 0, TOTAL)
        allocate_on(0, 1)

    child.expect_ok("numa_allocation", body)


# --- fallocate ----------------------------------------------------------------------------


def test_fallocate(gmem: int) -> None:
    keep = libc.FALLOC_FL_KEEP_SIZE
    punch = keep | libc.FALLOC_FL_PUNCH_HOLE

    def ok(mode: int, off: int, length: int, what: str) -> None:
        try:
            libc.fallocate(gmem, mode, off, length)
        except OSError as exc:
            raise AssertionError(f"{what} should succeed: {exc}") from exc

    def fails(mode: int, off: int, length: int, what: str) -> None:
        with pytest.raises(OSError):
            libc.fallocate(gmem, mode, off, length)
            pytest.fail(f"{what} should fail")

    ok(keep, 0, TOTAL, "fallocate with aligned offset and size")
    fails(punch, PAGE - 1, PAGE, "fallocate with unaligned offset")
    fails(keep, TOTAL, PAGE, "fallocate beginning at total_size")
    fails(keep, TOTAL + PAGE, PAGE, "fallocate beginning after total_size")
    ok(punch, TOTAL, PAGE, "fallocate(PUNCH_HOLE) at total_size")
    ok(punch, TOTAL + PAGE, PAGE, "fallocate(PUNCH_HOLE) after total_size")
    fails(punch, PAGE, PAGE - 1, "fallocate with unaligned size")
    ok(punch, PAGE, PAGE, "fallocate(PUNCH_HOLE) with aligned offset and size")
    ok(keep, PAGE, PAGE, "fallocate to restore punched hole")


LEAK_CHUNK = 32 << 20
LEAK_ROUNDS = 8


def _mem_available() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("/proc/meminfo has no MemAvailable line")


def test_fallocated_pages_freed_on_close(vm: api.Vm) -> None:
    """Pages fallocate() put in a guest_memfd go back to the system when it is closed.

    kvm_gmem_allocate() takes a reference on each folio it instantiates and must drop
    it (folio_put) before the next; one lost put (mutant 8c888c206b59: `continue`
    after folio_unlock) leaks every page fallocate touches, which no functional check
    sees. 8 rounds of 32 MiB leak 256 MiB; the threshold leaves room for other work.
    """
    before = _mem_available()
    for _ in range(LEAK_ROUNDS):
        fd = vm.create_guest_memfd(LEAK_CHUNK, 0, own=False)
        try:
            libc.fallocate(fd, libc.FALLOC_FL_KEEP_SIZE, 0, LEAK_CHUNK)
        finally:
            os.close(fd)
    lost = before - _mem_available()
    assert lost < LEAK_ROUNDS * LEAK_CHUNK // 2, (
        f"{lost >> 20} MiB less available after fallocating and closing "
        f"{LEAK_ROUNDS} x {LEAK_CHUNK >> 20} MiB guest_memfds: their pages were not freed"
    )


def test_fallocate_requires_keep_size(gmem: int) -> None:
    # kvm_gmem_fallocate: no KEEP_SIZE, or any other mode bit -> EOPNOTSUPP.
    for mode in (0, libc.FALLOC_FL_PUNCH_HOLE, libc.FALLOC_FL_KEEP_SIZE | 0x08):
        with pytest.raises(OSError) as info:
            libc.fallocate(gmem, mode, 0, PAGE)
        assert info.value.errno == errno.EOPNOTSUPP, f"mode {mode:#x}: {info.value}"


INVALID_PUNCH = [
    (0, 1), (0, PAGE - 1), (0, PAGE + 1),
    (1, 1), (1, PAGE - 1), (1, PAGE), (1, PAGE + 1),
    (PAGE, 1), (PAGE, PAGE - 1), (PAGE, PAGE + 1),
]  # fmt: skip


def test_invalid_punch_hole(gmem: int) -> None:
    for off, length in INVALID_PUNCH:
        with pytest.raises(OSError) as info:
            libc.punch_hole(gmem, off, length)
        assert info.value.errno == errno.EINVAL, (
            f"PUNCH_HOLE with !PAGE_SIZE offset ({off:#x}) and/or length ({length:#x})"
            " should fail with EINVAL"
        )


# --- binding ----------------------------------------------------------------------------------


def test_invalid_binding(vm: api.Vm, gmem: int) -> None:
    # 7.3 computes offset + size unsigned and rejects it against i_size; a kernel
    # doing the check in signed loff_t overflows and accepts the memslot.
    offset = (2**63 - 1) & ~(PAGE - 1)
    with pytest.raises(OSError) as info:
        api.set_user_memory_region2(vm.fd, 0, uapi.KVM_MEM_GUEST_MEMFD, 0, TOTAL, 0, gmem, offset)
        pytest.fail(
            f"Memslot with out-of-range offset+size should fail "
            f"(offset {offset:#x} + size {TOTAL:#x} was accepted)"
        )
    assert info.value.errno == errno.EINVAL, "Memslot with out-of-range offset+size should fail"
