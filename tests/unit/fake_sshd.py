"""An in-process paramiko SSH server on a loopback socket, for real handshakes and real
command channels without a VM.

The server accepts the lab's key for root, answers exec requests through a handler
(command, channel) -> exit status (None: close without one), and can be silent (TCP
accepted, not a byte back: a paused guest at connect time) or frozen (connected, but its
transport stops answering: a paused guest mid-command).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import paramiko
from paramiko.common import AUTH_FAILED, AUTH_SUCCESSFUL, OPEN_SUCCEEDED

from harness import keys

# (command, channel) -> exit status, or None to close the channel without one.
Handler = Callable[[str, paramiko.Channel], "int | None"]


def default_handler(command: str, channel: paramiko.Channel) -> int | None:
    return 0


class _Interface(paramiko.ServerInterface):
    def __init__(self, server: FakeSshd) -> None:
        self.server = server

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        self.server.auth_attempts += 1
        if self.server.auth_delay_s:
            time.sleep(self.server.auth_delay_s)
        ok = username == "root" and key.get_base64() == self.server.client_key_b64
        return AUTH_SUCCESSFUL if ok else AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return OPEN_SUCCEEDED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        text = command.decode()
        self.server.commands.append(text)
        threading.Thread(target=self._exec, args=(text, channel), daemon=True).start()
        return True

    def _exec(self, command: str, channel: paramiko.Channel) -> None:
        # The exec request's success reply goes out after check_channel_exec_request
        # returns; a command that ends at once must not close the channel before it.
        time.sleep(0.05)
        try:
            code = self.server.handler(command, channel)
            if code is not None:
                channel.send_exit_status(code)
        except Exception:  # the client went away: nothing to answer
            pass
        finally:
            self.server.closed_channels += 1
            with contextlib.suppress(Exception):
                channel.close()

    def check_global_request(self, kind: str, msg: paramiko.Message) -> bool:
        self.server.global_requests += 1
        # Frozen: the server's transport thread stops, like a paused guest's sshd.
        while self.server.frozen.is_set() and not self.server.stopping.is_set():
            time.sleep(0.05)
        return False


class FakeSshd:
    """Accepts on 127.0.0.1 and speaks SSH with host_key (or, silent, never answers)."""

    def __init__(
        self,
        host_key: paramiko.PKey,
        client_key_b64: str,
        silent: bool = False,
        handler: Handler = default_handler,
    ) -> None:
        self.host_key = host_key
        self.client_key_b64 = client_key_b64
        self.silent = silent
        self.handler = handler
        self.auth_delay_s = 0.0
        self.connections = 0
        self.auth_attempts = 0
        self.global_requests = 0
        self.closed_channels = 0
        self.commands: list[str] = []
        self.frozen = threading.Event()
        self.stopping = threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._held: list[socket.socket] = []
        self._transports: list[paramiko.Transport] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            if self.silent:
                self._held.append(conn)  # a paused guest: TCP up, not a byte back
                continue
            t = paramiko.Transport(conn)
            t.add_server_key(self.host_key)
            self._transports.append(t)
            with contextlib.suppress(Exception):
                t.start_server(server=_Interface(self))

    def close(self) -> None:
        self.stopping.set()
        self._thread.join(5)
        for t in self._transports:
            t.close()
        for c in self._held:
            c.close()
        self.sock.close()


@contextlib.contextmanager
def sshd(
    host_key: paramiko.PKey,
    lab_keys: keys.LabKeys,
    silent: bool = False,
    handler: Handler = default_handler,
) -> Iterator[FakeSshd]:
    server = FakeSshd(host_key, lab_keys.client_pubkey.read_text().split()[1], silent, handler)
    try:
        yield server
    finally:
        server.close()


def host_key_of(lab_keys: keys.LabKeys) -> paramiko.PKey:
    """The pinned key: the server the lab trusts."""
    return paramiko.Ed25519Key.from_private_key_file(str(lab_keys.host_key))
