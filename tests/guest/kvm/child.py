"""Run code in a forked child with a deadline; SIGBUS expectations.

Python cannot siglongjmp out of a faulting access the way the C selftests'
TEST_EXPECT_SIGBUS does, so each risky access runs in a forked child and the
parent inspects how it died. A child that exits normally when SIGBUS was
expected is a failure, never a pass.
"""

import contextlib
import faulthandler
import os
import resource
import signal
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_TIMEOUT = 30.0


class ChildTimeout(AssertionError):
    pass


@dataclass(frozen=True)
class ChildResult:
    status: int
    message: str

    @property
    def signal(self) -> int | None:
        return os.WTERMSIG(self.status) if os.WIFSIGNALED(self.status) else None

    @property
    def exit_code(self) -> int | None:
        return os.WEXITSTATUS(self.status) if os.WIFEXITED(self.status) else None

    def describe(self) -> str:
        if self.signal is not None:
            return f"killed by {signal.Signals(self.signal).name}"
        text = f"exited with status {self.exit_code}"
        return f"{text}: {self.message}" if self.message else text


def _child_setup() -> None:
    # pytest's faulthandler would print a traceback for the expected SIGBUS;
    # the default disposition makes the child die by the signal itself.
    faulthandler.disable()
    for sig in (signal.SIGBUS, signal.SIGSEGV, signal.SIGALRM):
        signal.signal(sig, signal.SIG_DFL)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


class Spawned:
    """A running child started by spawn(); wait() collects it."""

    def __init__(self, pid: int, rfd: int) -> None:
        self.pid = pid
        self.rfd = rfd

    def poll(self) -> ChildResult | None:
        """The child's result if it has ended (the C test's waitpid(WNOHANG) check)."""
        done, status = os.waitpid(self.pid, os.WNOHANG)
        return self._collect(status) if done else None

    def wait(self, timeout: float = DEFAULT_TIMEOUT) -> ChildResult:
        try:
            status = _wait(self.pid, timeout)
        except ChildTimeout:
            os.close(self.rfd)
            raise
        return self._collect(status)

    def _collect(self, status: int) -> ChildResult:
        chunks = []
        try:
            while chunk := os.read(self.rfd, 4096):
                chunks.append(chunk)
        finally:
            os.close(self.rfd)
        return ChildResult(status, b"".join(chunks).decode(errors="replace").strip())


def spawn(fn: Callable[[], object]) -> Spawned:
    """Fork and run fn() in the child; exit 0 if it returned, 1 (with traceback) if it raised.

    The child never returns into pytest: it leaves through os._exit.
    """
    rfd, wfd = os.pipe()
    with warnings.catch_warnings():
        # Since 6.13 a VM's NX-huge-page recovery worker is a task in our thread
        # group, so Python 3.12+ calls the process multi-threaded. The child runs
        # only fn() and exits; it never touches that worker.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            os.close(rfd)
            _child_setup()
            fn()
            code = 0
        except BaseException:
            with contextlib.suppress(OSError):
                os.write(wfd, traceback.format_exc().encode()[-4000:])
        finally:
            os._exit(code)
    os.close(wfd)
    return Spawned(pid, rfd)


def run_in_child(fn: Callable[[], object], timeout: float = DEFAULT_TIMEOUT) -> ChildResult:
    """Fork, run fn() in the child, return how the child ended."""
    return spawn(fn).wait(timeout)


def _wait(pid: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise ChildTimeout(f"child {pid} did not finish within {timeout:.0f}s")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def expect_sigbus(what: str, fn: Callable[[], object], timeout: float = DEFAULT_TIMEOUT) -> None:
    """Assert that fn() dies by SIGBUS in a child ("'<what>' should have triggered SIGBUS")."""
    result = run_in_child(fn, timeout)
    if result.signal == signal.SIGBUS:
        return
    raise AssertionError(f"'{what}' should have triggered SIGBUS; child {result.describe()}")


def expect_ok(what: str, fn: Callable[[], object], timeout: float = DEFAULT_TIMEOUT) -> None:
    """Assert that fn() completes in a child (used where the parent must not risk a SIGBUS)."""
    result = run_in_child(fn, timeout)
    if result.exit_code == 0:
        return
    raise AssertionError(f"'{what}' failed; child {result.describe()}")
