"""Real SSH handshakes against an in-process paramiko server on a loopback socket.

The mock-based tests in test_remote.py show what the lab asks paramiko for; these show
what happens on the wire: a guest presenting the wrong host key is refused after one
attempt (issue 15), before the lab's key is ever offered, and a guest that stops
answering cannot hold a connection attempt past its deadlines.
"""

from __future__ import annotations

import time
from pathlib import Path

import paramiko
import pytest

from harness import keys, remote, ssh_connect
from harness.errors import InfraError
from tests.unit.fake_sshd import FakeSshd, sshd


@pytest.fixture
def lab_keys(tmp_path: Path) -> keys.LabKeys:
    return keys.ensure_keys(tmp_path / "keys")


def endpoint(server: FakeSshd, lab_keys: keys.LabKeys) -> remote.Endpoint:
    return remote.Endpoint(
        host="127.0.0.1",
        port=server.port,
        user="root",
        key_file=lab_keys.client_key,
        host_key_line=lab_keys.host_key_line,
    )


def ed25519(path: Path) -> paramiko.PKey:
    keys.generate_pair(path, "test")
    return paramiko.Ed25519Key.from_private_key_file(str(path))


def test_the_pinned_key_connects(lab_keys: keys.LabKeys) -> None:
    # The control: with the right host key the same server lets the lab in.
    right = paramiko.Ed25519Key.from_private_key_file(str(lab_keys.host_key))
    with sshd(right, lab_keys) as server, remote.Remote(endpoint(server, lab_keys)) as r:
        r.connect(deadline_s=20, retry_every_s=0.1)
        assert r.alive()
        assert server.auth_attempts == 1


def test_wrong_host_key_is_refused_after_one_attempt(
    tmp_path: Path, lab_keys: keys.LabKeys
) -> None:
    impostor = ed25519(tmp_path / "impostor")
    with sshd(impostor, lab_keys) as server:
        start = time.monotonic()
        with pytest.raises(InfraError, match="does not match the pinned key") as err:
            remote.Remote(endpoint(server, lab_keys)).connect(deadline_s=30, retry_every_s=0.1)
        assert time.monotonic() - start < 10  # no retry loop up to the 30 s deadline
        time.sleep(0.3)  # a retry, had there been one, would have connected by now
        assert server.connections == 1
        # The lab's key is never offered to a host it does not trust.
        assert server.auth_attempts == 0
    assert impostor.fingerprint in err.value.message


def test_host_key_of_another_type_is_refused_after_one_attempt(lab_keys: keys.LabKeys) -> None:
    # An RSA-only server: nothing pinned for that type, so RejectPolicy refuses it.
    impostor = paramiko.RSAKey.generate(2048)
    with sshd(impostor, lab_keys) as server:
        with pytest.raises(InfraError, match=r"does not match the pinned key|not trusted"):
            remote.Remote(endpoint(server, lab_keys)).connect(deadline_s=30, retry_every_s=0.1)
        time.sleep(0.3)
        assert server.connections == 1
        assert server.auth_attempts == 0


def test_silent_guest_cannot_hold_a_connection_attempt(
    lab_keys: keys.LabKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A paused guest: TCP is accepted (QEMU's user network does that) but no banner.
    monkeypatch.setattr(ssh_connect, "SSH_BANNER_TIMEOUT_S", 1)
    right = paramiko.Ed25519Key.from_private_key_file(str(lab_keys.host_key))
    with sshd(right, lab_keys, silent=True) as server:
        r = remote.Remote(endpoint(server, lab_keys), connect_timeout=1)
        start = time.monotonic()
        with pytest.raises(InfraError, match="no SSH connection within"):
            r.connect(deadline_s=1.5, retry_every_s=0.1)
        assert time.monotonic() - start < 6
        assert server.connections >= 1


def test_stalled_authentication_hits_its_deadline(
    lab_keys: keys.LabKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ssh_connect, "SSH_AUTH_TIMEOUT_S", 1)
    right = paramiko.Ed25519Key.from_private_key_file(str(lab_keys.host_key))
    with sshd(right, lab_keys) as server:
        server.auth_delay_s = 5
        start = time.monotonic()
        with pytest.raises(InfraError, match="authentication"):
            remote.Remote(endpoint(server, lab_keys)).connect(deadline_s=30, retry_every_s=0.1)
        assert time.monotonic() - start < 4


def test_every_connection_phase_has_an_explicit_deadline() -> None:
    limits = (
        ssh_connect.SSH_CONNECT_TIMEOUT_S,
        ssh_connect.SSH_BANNER_TIMEOUT_S,
        ssh_connect.SSH_AUTH_TIMEOUT_S,
        ssh_connect.SSH_CHANNEL_TIMEOUT_S,
    )
    # TCP connect, then the first phase that stalls: about 30 s at most per attempt.
    assert ssh_connect.SSH_CONNECT_TIMEOUT_S + max(limits[1:]) <= 30
