"""Ctrl-C and SIGTERM: one way to stop, acted on within a second wherever the lab waits.

`handlers()` makes both signals raise Interrupted (a KeyboardInterrupt, so every
`except KeyboardInterrupt` cleanup path treats SIGTERM like Ctrl-C). The signal is also
remembered, so a loop that waits on something outside Python (a guest command over SSH,
QEMU booting) calls check() between short polls: a library that swallowed the
exception cannot make the lab wait for the guest.

Once the first signal has been raised the lab is stopping: it tears the VM down and
writes what was collected. A second signal only says so (a CI runner often sends SIGTERM
twice); a third one raises again, for a person who really wants out now.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType

# How many signals after the first are only acknowledged before one raises again.
_PATIENCE = 1


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM (a CI cancelling the job)."""

    def __init__(self, signame: str = "SIGINT") -> None:
        super().__init__(signame)
        self.signame = signame

    def __str__(self) -> str:
        return f"interrupted by {self.signame}"


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.signame: str | None = None
        self.extra = 0
        # How many handlers() blocks are open: only the outermost installs and restores.
        self.depth = 0


_state = _State()


def requested() -> str | None:
    """The name of the signal that asked the lab to stop, or None."""
    return _state.signame


def check() -> None:
    """Raise Interrupted if a stop was asked for (for polling loops)."""
    name = _state.signame
    if name is not None:
        raise Interrupted(name)


def reason(exc: BaseException | None = None) -> str:
    """One line for the report: which signal stopped the run."""
    name = (exc.signame if isinstance(exc, Interrupted) else _state.signame) or "SIGINT"
    return "interrupted by Ctrl-C (SIGINT)" if name == "SIGINT" else f"interrupted by {name}"


def _handler(signum: int, frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    with _state.lock:
        first = _state.signame is None
        if first:
            _state.signame = name
        else:
            _state.extra += 1
        patient = not first and _state.extra <= _PATIENCE
    if patient:
        sys.stderr.write(f"lab: {name} again: already stopping, writing what was collected\n")
        sys.stderr.flush()
        return
    raise Interrupted(name)


def reset() -> None:
    """Forget an earlier signal (tests; a new command in the same process)."""
    with _state.lock:
        _state.signame = None
        _state.extra = 0


@contextlib.contextmanager
def handlers() -> Iterator[None]:
    """SIGINT and SIGTERM raise Interrupted inside the block (main thread only) and set
    the flag check() reads; a signal seen inside is forgotten when the block ends.

    The one way a command installs them (a test checks no other module calls
    signal.signal). Blocks nest: an inner one neither resets nor restores, so a command
    that calls another's code cannot clear the signal the outer one is unwinding for.
    """
    outermost = _state.depth == 0
    previous = {}
    if outermost:
        reset()
        previous = {s: signal.signal(s, _handler) for s in (signal.SIGINT, signal.SIGTERM)}
    _state.depth += 1
    try:
        yield
    finally:
        _state.depth -= 1
        if outermost:
            for s, h in previous.items():
                signal.signal(s, h)
            reset()
