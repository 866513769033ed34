"""Run a long command with its output in a log file and a live status line.

Builds and image creation run for minutes: the full output goes to a log in the run
or cache folder, and the terminal shows one line with the phase, the elapsed time and
the latest interesting output line, so a person sees progress without the noise.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from harness import arch
from harness.errors import InfraError, UserError

# Which Debian package provides a tool, so a missing tool names its fix.
TOOL_PACKAGES: dict[str, str] = {
    "make": "make",
    "gcc": "gcc",
    "flex": "flex",
    "bison": "bison",
    "bc": "bc",
    "ccache": "ccache",
    "git": "git",
    "mmdebstrap": "mmdebstrap",
    "mkfs.ext4": "e2fsprogs",
    "qemu-img": "qemu-utils",
    arch.HOST.qemu: arch.HOST.qemu_package,
    "ssh-keygen": "openssh-client",
    "apt-get": "apt",
    "dpkg-deb": "dpkg",
    "tar": "tar",
    "xz": "xz-utils",
    "cpio": "cpio",
    "rsync": "rsync",
}


def require_tools(*tools: str) -> None:
    """Fail early, naming every missing tool and the packages that bring them."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        packages = sorted({TOOL_PACKAGES.get(t, t) for t in missing})
        raise UserError(
            f"missing tools: {', '.join(missing)}",
            f"install the Debian packages {' '.join(packages)} (or run `make deps`)",
        )


@dataclass(frozen=True)
class Finished:
    argv: tuple[str, ...]
    returncode: int
    seconds: float
    log: Path


class StatusLine:
    """One updating line on a terminal; periodic plain lines when not a terminal."""

    def __init__(self, label: str, stream: TextIO = sys.stderr, interval: float = 30.0) -> None:
        self.label = label
        self.stream = stream
        self.tty = stream.isatty()
        self.interval = interval
        self.start = time.monotonic()
        self._last_plain = 0.0
        self._lock = threading.Lock()
        self._detail = ""

    def update(self, detail: str | None = None, force: bool = False) -> None:
        with self._lock:
            if detail is not None:
                self._detail = detail.strip()[:90]
            elapsed = time.monotonic() - self.start
            text = f"  {self.label}: {elapsed:5.0f}s  {self._detail}"
            if self.tty:
                width = shutil.get_terminal_size((100, 20)).columns
                self.stream.write("\r\033[K" + text[: width - 1])
                self.stream.flush()
            elif force or elapsed - self._last_plain >= self.interval:
                self._last_plain = elapsed
                self.stream.write(text + "\n")
                self.stream.flush()

    def done(self, result: str) -> None:
        elapsed = time.monotonic() - self.start
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(f"  {self.label}: {result} in {elapsed:.1f}s\n")
        self.stream.flush()


def run_logged(
    argv: Sequence[str | os.PathLike[str]],
    *,
    log: Path,
    label: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    interesting: Callable[[str], bool] = lambda line: bool(line.strip()),
    check: bool = True,
) -> Finished:
    """Run argv (never through a shell), appending all output to log.

    With check, a non-zero exit is an InfraError that names the log and quotes its tail.
    """
    args = tuple(str(a) for a in argv)
    if "/" not in args[0]:
        require_tools(args[0])
    log.parent.mkdir(parents=True, exist_ok=True)
    status = StatusLine(label)
    start = time.monotonic()
    with log.open("ab") as sink:
        sink.write(f"$ {' '.join(args)}\n".encode())
        sink.flush()
        proc = subprocess.Popen(
            args,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        assert proc.stdout is not None
        ticker_stop = threading.Event()

        def tick() -> None:
            while not ticker_stop.wait(1.0):
                status.update()

        ticker = threading.Thread(target=tick, daemon=True)
        ticker.start()
        try:
            for raw in proc.stdout:
                sink.write(raw)
                line = raw.decode(errors="replace")
                if interesting(line):
                    status.update(line)
                if timeout is not None and time.monotonic() - start > timeout:
                    kill_group(proc)
                    raise InfraError(f"{label}: timed out after {timeout:.0f}s", f"see {log}")
            returncode = proc.wait()
        except BaseException:
            kill_group(proc)
            raise
        finally:
            ticker_stop.set()
    seconds = time.monotonic() - start
    status.done("ok" if returncode == 0 else f"failed (exit {returncode})")
    if check and returncode != 0:
        raise InfraError(
            f"{label} failed (exit {returncode}); last lines of {log}:\n{tail(log, 15)}",
            f"read the full log: {log}",
        )
    return Finished(args, returncode, seconds, log)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill a command started in its own session and everything it started, then reap
    it: killing only a top-level make leaves its sub-makes compiling on, unlocked, and
    QEMU's helpers must not outlive it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    proc.wait()


def tail(path: Path, lines: int) -> str:
    """The last lines of a text file, indented for quoting in a message."""
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except FileNotFoundError:
        return "    (no log)"
    return "\n".join("    " + line for line in text)


def pid_alive(pid: int) -> bool:
    """True while a process with this pid exists (ours or not: EPERM means it exists)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
