"""A minimal QMP client: enough to ask QEMU to quit cleanly and whether the guest runs.

Two commands are needed (`quit`, `query-status`), so a socket and a few JSON lines beat
a library. Every step has a short timeout: a wedged QEMU is killed by the caller instead.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any


class QmpError(Exception):
    pass


def _read_message(sock: socket.socket, buf: bytearray) -> dict[str, Any]:
    while b"\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise QmpError("QMP socket closed")
        buf.extend(chunk)
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    message: dict[str, Any] = json.loads(line)
    return message


def execute(path: Path, command: str, timeout: float = 2.0) -> dict[str, Any]:
    """Connect, negotiate capabilities, run one command, return its reply."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            buf = bytearray()
            greeting = _read_message(sock, buf)
            if "QMP" not in greeting:
                raise QmpError(f"unexpected QMP greeting: {greeting}")
            for cmd in ("qmp_capabilities", command):
                sock.sendall(json.dumps({"execute": cmd}).encode() + b"\n")
                while True:  # skip asynchronous events until the reply
                    reply = _read_message(sock, buf)
                    if "return" in reply or "error" in reply:
                        break
                if "error" in reply:
                    raise QmpError(f"{cmd}: {reply['error']}")
            return reply
    except (OSError, ValueError) as exc:
        raise QmpError(str(exc)) from exc


def quit_vm(path: Path, timeout: float = 2.0) -> bool:
    """Ask QEMU to quit; False when QMP is not reachable (the caller then kills)."""
    try:
        execute(path, "quit", timeout)
    except QmpError:
        return False
    return True


def query_status(path: Path, timeout: float = 2.0) -> str:
    """The VM's run state: 'running', 'paused', 'io-error', 'internal-error', ...

    Raises QmpError when QEMU does not answer.
    """
    reply = execute(path, "query-status", timeout)
    try:
        return str(reply["return"]["status"])
    except (KeyError, TypeError) as exc:
        raise QmpError(f"unexpected query-status reply: {reply}") from exc
