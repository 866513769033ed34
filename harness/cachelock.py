"""An advisory lock on a cache entry, so two lab processes never build into one folder.

`lab run` builds the kernel too, and a developer may run `lab build` beside it: two
makes in one build folder corrupt it, and two unpacks of one package race. flock is
released by the kernel when the process dies, so a crashed run leaves no stale lock.
"""

from __future__ import annotations

import fcntl
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def locked(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on path (created if needed), saying so when waiting."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"  waiting for another lab process using {what} ({path})", file=sys.stderr)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
