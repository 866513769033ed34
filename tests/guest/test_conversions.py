"""guest_memfd_conversions_test.c (the series; v8: x86/, SERIES.md §3.3): all nine cases.

Case bodies follow v8 (the revision the lab builds); where RFC v3 differed
(elevated_refcount pinned with vmsplice) the v3 variant is kept beside it.

Each case runs on a SW_PROTECTED VM whose guest_memfd is converted with the
guest_memfd KVM_SET_MEMORY_ATTRIBUTES2 ioctl, and checks every state from
both sides: the host (mmap, SIGBUS in forked children) and the guest (the
mini guest reading and writing the byte at offset 0 of each page).
"""

import errno
import os
from collections.abc import Callable, Iterator

import pytest
from convlib import PAGE, PRIVATE, ConversionEnv
from gmemsuite import require_conversions, require_vcpus
from kvm import child, gup, libc, uapi
from kvm.probe import Features

EnvFactory = Callable[[int, bool], ConversionEnv]


@pytest.fixture
def make_env(features: Features) -> Iterator[EnvFactory]:
    require_conversions(features)
    require_vcpus(features)
    envs: list[ConversionEnv] = []

    def make(nr_pages: int, init_shared: bool) -> ConversionEnv:
        if init_shared and not features.gmem_flags.get("sw_protected", 0) & (
            uapi.GUEST_MEMFD_FLAG_INIT_SHARED
        ):
            pytest.skip("GUEST_MEMFD_FLAG_INIT_SHARED not supported for sw_protected VMs")
        envs.append(ConversionEnv(features, nr_pages, init_shared))
        return envs[-1]

    yield make
    for env in envs:
        env.close()


def test_init_private(make_env: EnvFactory) -> None:
    t = make_env(1, False)
    t.test_private(0, 0, ord("A"))
    t.convert_to_shared(0, ord("A"), ord("B"), ord("C"))
    t.convert_to_private(0, ord("C"), ord("E"))


def test_init_shared(make_env: EnvFactory) -> None:
    t = make_env(1, True)
    t.test_shared(0, 0, ord("A"), ord("B"))
    t.convert_to_private(0, ord("B"), ord("C"))
    t.convert_to_shared(0, ord("C"), ord("D"), ord("E"))


@pytest.mark.timeout(600)
def test_indexing(make_env: EnvFactory) -> None:
    """Converting one page touches exactly that page (v8 `indexing`, "precision" folded in).

    Byte values are the C test's combine(page, n) = (page << 4) + n. Pages are
    first written highest index first, so a kernel that always operates on page
    0 is caught; after the round trip the converted page holds what the guest
    wrote while it was private (v8 leaves contents alone on conversion).
    """
    n = 4

    def c(page: int, k: int) -> int:
        return (page << 4) + k

    for test_page in range(n):
        t = make_env(n, True)
        for i in reversed(range(n)):
            t.test_shared(i, 0, c(i, 0), c(i, 2))
        t.convert_to_private(test_page, c(test_page, 2), c(test_page, 3))
        for i in range(n):
            if i == test_page:
                t.test_private(i, c(i, 3), c(i, 4))
            else:
                t.test_shared(i, c(i, 2), c(i, 3), c(i, 4))
        t.convert_to_shared(test_page, c(test_page, 4), c(test_page, 5), c(test_page, 6))
        for i in range(n):
            expected = c(i, 6) if i == test_page else c(i, 4)
            t.test_shared(i, expected, c(i, 7), c(i, 8))
        t.close()


def test_before_allocation_shared(make_env: EnvFactory) -> None:
    t = make_env(1, True)
    t.convert_to_private(0, 0, ord("A"))


def test_before_allocation_private(make_env: EnvFactory) -> None:
    t = make_env(1, False)
    t.convert_to_shared(0, 0, ord("A"), ord("B"))


@pytest.mark.timeout(900)
def test_unallocated_folios(make_env: EnvFactory) -> None:
    """One bulk to-private over allocated and never-allocated pages."""
    n = 8
    for test_page in range(n):
        t = make_env(n, True)
        t.host_do_rmw(test_page, 0, ord("A"))
        if test_page != 4:
            t.host_do_rmw(4, 0, ord("A"))
        t.set_attributes(0, n * PAGE, PRIVATE)
        for i in range(n):
            expect = ord("A") if i in (test_page, 4) else 0
            t.test_private(i, expect, ord("B"))
        for i in range(n):
            t.convert_to_shared(i, ord("B"), ord("C"), ord("D"))
        t.close()


def test_truncate(make_env: EnvFactory) -> None:
    """Hole punching frees the page but keeps its shared/private state."""
    t = make_env(1, True)
    t.host_do_rmw(0, 0, ord("A"))
    libc.punch_hole(t.gmem_fd, 0, PAGE)
    t.host_do_rmw(0, 0, ord("A"))
    t.convert_to_private(0, ord("A"), ord("B"))
    libc.punch_hole(t.gmem_fd, 0, PAGE)
    t.test_private(0, 0, ord("A"))


def test_forked_accesses(make_env: EnvFactory) -> None:
    """A conversion to private zaps the page from every process's page tables."""
    t = make_env(1, True)
    t.test_shared(0, 0, 0xA, 0xB)
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    mem = t.mem

    def child_body() -> None:
        os.close(to_child_w)
        os.close(to_parent_r)
        # CHECK_SHARED: fault the page into this process too.
        assert os.read(to_child_r, 1) == b"S"
        got = mem.read_byte(0)
        assert got == 0xB, f"child read {got:#x}, expected 0xb"
        mem.write_byte(0, 0xC)
        os.write(to_parent_w, b"s")  # DONE_CHECKING_SHARED
        # CHECK_PRIVATE: the parent converted; both accesses must SIGBUS here.
        assert os.read(to_child_r, 1) == b"P"
        child.expect_sigbus("child read after conversion", lambda: mem.read_byte(0))
        child.expect_sigbus("child write after conversion", lambda: mem.write_byte(0, 0xE))
        os.write(to_parent_w, b"p")  # DONE_CHECKING_PRIVATE

    proc = child.spawn(child_body)
    os.close(to_child_r)
    os.close(to_parent_w)
    try:
        os.write(to_child_w, b"S")
        _await(to_parent_r, b"s", proc)
        t.convert_to_private(0, 0xC, 0xD)
        os.write(to_child_w, b"P")
        _await(to_parent_r, b"p", proc)
    finally:
        os.close(to_child_w)
        os.close(to_parent_r)
    result = proc.wait(60)
    assert result.exit_code == 0, f"child {result.describe()}"


def _await(fd: int, token: bytes, proc: child.Spawned) -> None:
    """Read the child's next state; EOF means it died ("Child exited prematurely")."""
    got = os.read(fd, 1)
    if got != token:
        result = proc.wait(10)
        raise AssertionError(f"Child exited prematurely: {result.describe()}")


@pytest.mark.timeout(600)
def test_elevated_refcount(make_env: EnvFactory) -> None:
    """v8 `elevated_refcount`: a GUP_TEST long-term pin blocks to-private; unpinning unblocks.

    As in v8's test, the page is pinned (pin_pages(), which faults it in) before
    anything else touches it. Bulk and single-page conversions that cover the
    pinned page fail with EAGAIN and error_offset = its offset; the others
    convert; after unpin_pages() the whole range converts and the pinned page
    still holds what the guest wrote while it was shared.
    """
    if not gup.available():
        pytest.skip(f"GUP_TEST not available ({uapi.GUP_TEST_PATH}: CONFIG_GUP_TEST off?)")
    n = 4
    for test_page in range(n):
        t = make_env(n, True)
        with gup.LongtermPin(t.mem.addr + test_page * PAGE, PAGE):
            _while_pinned(t, n, test_page)
        _after_unpin(t, n, test_page)


def _while_pinned(t: ConversionEnv, n: int, test_page: int) -> None:
    """With test_page pinned: converting any range holding it to private fails with
    EAGAIN naming its offset (kvm_gmem_set_attributes()'s refcount check), and nothing
    changes; the other pages still convert one by one."""
    for i in range(n):
        t.test_shared(i, 0, ord("A"), ord("B"))
    _expect_eagain(t, 0, n, test_page)
    for i in range(n):
        if i == test_page:
            _expect_eagain(t, i, 1, test_page)
        else:
            t.convert_to_private(i, ord("B"), ord("C"))


def _after_unpin(t: ConversionEnv, n: int, test_page: int) -> None:
    """Unpinned: the whole range converts in one call, and every page kept its data."""
    t.set_attributes(0, n * PAGE, PRIVATE)
    for i in range(n):
        t.test_private(i, ord("B") if i == test_page else ord("C"), ord("D"))
    t.close()


def _expect_eagain(t: ConversionEnv, first: int, count: int, pinned: int) -> None:
    off = t.expect_conversion_failure(first * PAGE, count * PAGE, PRIVATE, errno.EAGAIN)
    assert off == pinned * PAGE, f"error_offset {off:#x}, expected {pinned * PAGE:#x}"


@pytest.mark.timeout(600)
def test_elevated_refcount_vmsplice(make_env: EnvFactory) -> None:
    """RFC v3 `elevated_refcount`: the same with the page pinned by vmsplice() into a pipe."""
    n = 4
    for test_page in range(n):
        t = make_env(n, True)
        pipe_r, pipe_w = os.pipe()
        try:
            pinned = libc.vmsplice(pipe_w, t.mem.addr + test_page * PAGE, PAGE)
            assert pinned == PAGE, f"vmsplice pinned {pinned} bytes"
            _while_pinned(t, n, test_page)
        finally:
            os.close(pipe_r)
            os.close(pipe_w)
        _after_unpin(t, n, test_page)
