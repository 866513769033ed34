"""guest_memfd_conversions_test.c (the series, SERIES.md §3.3): all nine cases.

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
from kvm import child, libc, uapi
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
    """Converting one page touches exactly that page (includes the "precision" check)."""
    n = 4
    for test_page in range(n):
        t = make_env(n, True)
        for i in reversed(range(n)):
            t.test_shared(i, 0, i, 2 * i)
        for i in range(n):
            if i == test_page:
                t.convert_to_private(i, 2 * i, 4 * i)
            else:
                t.test_shared(i, 2 * i, 3 * i, 4 * i)
        for i in range(n):
            if i == test_page:
                t.test_private(i, 4 * i, 6 * i)
            else:
                t.test_shared(i, 4 * i, 5 * i, 6 * i)
        for i in range(n):
            if i == test_page:
                t.convert_to_shared(i, 6 * i, 7 * i, 8 * i)
            else:
                t.test_shared(i, 6 * i, 7 * i, 8 * i)


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
    """A pinned page blocks to-private with EAGAIN and its offset; unpinning unblocks it."""
    n = 4
    for test_page in range(n):
        t = make_env(n, True)
        pipe_r, pipe_w = os.pipe()
        try:
            pinned = libc.vmsplice(pipe_w, t.mem.addr + test_page * PAGE, PAGE)
            assert pinned == PAGE, f"vmsplice pinned {pinned} bytes"
            for i in range(n):
                t.test_shared(i, 0, ord("A"), ord("B"))
            off = t.expect_conversion_failure(0, n * PAGE, PRIVATE, errno.EAGAIN)
            assert off == test_page * PAGE, f"error_offset {off:#x}, expected {test_page * PAGE:#x}"
            for i in range(n):
                if i == test_page:
                    off = t.expect_conversion_failure(i * PAGE, PAGE, PRIVATE, errno.EAGAIN)
                    assert off == i * PAGE, f"error_offset {off:#x}, expected {i * PAGE:#x}"
                else:
                    t.convert_to_private(i, ord("B"), ord("C"))
        finally:
            os.close(pipe_r)
            os.close(pipe_w)
        t.set_attributes(0, n * PAGE, PRIVATE)
        for i in range(n):
            t.test_private(i, ord("B") if i == test_page else ord("C"), ord("D"))
