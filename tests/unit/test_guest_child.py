"""The guest suite's fork-based SIGBUS checks, exercised without KVM."""

import os
import signal
import time
from pathlib import Path

import pytest

from tests.unit import guestmods

child = guestmods.load("kvm.child")
libc = guestmods.load("kvm.libc")


def _die_by_sigbus() -> None:
    os.kill(os.getpid(), signal.SIGBUS)


def test_expect_sigbus_passes_on_sigbus() -> None:
    child.expect_sigbus("raise SIGBUS", _die_by_sigbus)


def test_expect_sigbus_fails_when_child_exits_normally() -> None:
    with pytest.raises(AssertionError, match="should have triggered SIGBUS; child exited"):
        child.expect_sigbus("no fault", lambda: None)


def test_expect_sigbus_fails_on_other_signal() -> None:
    with pytest.raises(AssertionError, match="SIGSEGV"):
        child.expect_sigbus("segv", lambda: os.kill(os.getpid(), signal.SIGSEGV))


def test_real_sigbus_from_truncated_file(tmp_path: Path) -> None:
    # A mapping past the end of a file faults with SIGBUS: the same path as guest_memfd.
    path = tmp_path / "f"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDWR)
    try:
        mem = libc.Mapping(4096, fd=fd)
        child.expect_sigbus("read past EOF", lambda: mem.read_byte(0))
        mem.unmap()
    finally:
        os.close(fd)


def test_expect_ok_reports_child_traceback() -> None:
    def boom() -> None:
        raise ValueError("child-side failure")

    with pytest.raises(AssertionError, match="child-side failure"):
        child.expect_ok("boom", boom)


def test_child_timeout_kills() -> None:
    start = time.monotonic()
    with pytest.raises(child.ChildTimeout):
        child.run_in_child(lambda: time.sleep(30), timeout=0.5)
    assert time.monotonic() - start < 10


def test_spawn_poll_and_wait() -> None:
    proc = child.spawn(lambda: None)
    result = proc.wait(10)
    assert result.exit_code == 0 and result.signal is None
