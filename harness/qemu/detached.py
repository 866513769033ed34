"""The VM `lab boot --detach` leaves running, for `lab ssh` and `lab stop`.

Its state is one JSON file in the cache; a state whose QEMU is gone (or whose pid now
belongs to another process) is stale and removed. `lab host-vm` keeps its VMs' states
the same way, one file per host VM (the `path` arguments).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from harness.paths import cache_dir
from harness.qemu import qmp
from harness.qemu.machine import STOP_GRACE_S, Machine, discard_overlay
from harness.remote import Endpoint


@dataclass(frozen=True)
class DetachedVm:
    """What `lab boot --detach` wrote down about its VM: how to reach it over SSH, and
    how to recognise and end its QEMU."""

    pid: int
    endpoint: Endpoint
    qmp_socket: Path
    run_dir: Path
    console_log: Path

    @classmethod
    def of(cls, machine: Machine) -> DetachedVm:
        return cls(
            pid=machine.proc.pid,
            endpoint=machine.endpoint(),
            qmp_socket=machine.qmp_socket,
            run_dir=machine.run_dir,
            console_log=machine.console_log,
        )

    @classmethod
    def from_json(cls, data: dict[str, object]) -> DetachedVm:
        def text(key: str) -> str:
            return str(data[key])

        endpoint = Endpoint(
            host=text("ssh_host"),
            port=int(text("ssh_port")),
            user=text("user"),
            key_file=Path(text("client_key")),
            host_key_line=text("host_key_line"),
        )
        return cls(
            pid=int(text("pid")),
            endpoint=endpoint,
            qmp_socket=Path(text("qmp_socket")),
            run_dir=Path(text("run_dir")),
            console_log=Path(text("console_log")),
        )

    def to_json(self) -> str:
        # Flat keys, as the file has always had: a state written before an upgrade
        # still loads, and `lab stop` can still end its VM.
        ep = self.endpoint
        fields = {
            "pid": self.pid,
            "ssh_host": ep.host,
            "ssh_port": ep.port,
            "user": ep.user,
            "client_key": str(ep.key_file),
            "host_key_line": ep.host_key_line,
            "qmp_socket": str(self.qmp_socket),
            "run_dir": str(self.run_dir),
            "console_log": str(self.console_log),
        }
        return json.dumps(fields, indent=2) + "\n"


def state_file() -> Path:
    return cache_dir("vm") / "current.json"


def save_state(machine: Machine, path: Path | None = None) -> DetachedVm:
    """Write down machine's state (in path, else the `lab boot --detach` file)."""
    state = DetachedVm.of(machine)
    (path or state_file()).write_text(state.to_json())
    return state


def load_state(path: Path | None = None) -> DetachedVm | None:
    """The detached VM's state if that VM still runs; a stale file is removed."""
    path = path or state_file()
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    state = DetachedVm.from_json(data)
    if not _is_our_qemu(state.pid, state.qmp_socket):
        path.unlink(missing_ok=True)
        return None
    return state


def _is_our_qemu(pid: int, qmp_socket: Path) -> bool:
    # The pid may have been reused since: it must be a QEMU with our QMP socket.
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(os.fsencode(qmp_socket) in a for a in argv)


def stop_detached(state: DetachedVm, path: Path | None = None) -> None:
    qmp.quit_vm(state.qmp_socket)
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline and _is_our_qemu(state.pid, state.qmp_socket):
        time.sleep(0.1)
    if _is_our_qemu(state.pid, state.qmp_socket):
        # Only a pid is known here (no Popen to hand to proc.kill_group), and this
        # process is not QEMU's parent, so there is nothing to reap.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(state.pid, signal.SIGKILL)
    (path or state_file()).unlink(missing_ok=True)
    discard_overlay(state.run_dir)
