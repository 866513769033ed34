"""The remote layer against fabric's SSH test doubles (no network, no VM)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
from fabric.testing.base import Command, MockRemote, Session
from paramiko.ssh_exception import NoValidConnectionsError

from harness import remote, ssh_connect
from harness.errors import InfraError

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIx0gWJFWCN9TeGpTMrhOVoC9OfUCdtx8MkHelHM7Hlm"
VM = remote.Endpoint(
    host="127.0.0.1",
    port=10022,
    user="root",
    key_file=Path("/cache/keys/lab_ed25519"),
    host_key_line=HOST_KEY,
)


@pytest.fixture
def mock() -> Iterator[MockRemote]:
    # Not used as a context manager: its safety check insists connect() got only
    # host/user/port, while we deliberately pass key and agent settings.
    m = MockRemote()
    yield m
    m.stop()


def client_of(m: MockRemote) -> Any:
    return m.sessions[0].client


def expect(m: MockRemote, *commands: Command) -> list[Any]:
    return list(m.expect_sessions(Session(commands=list(commands))))


def connected_client(m: MockRemote, ep: remote.Endpoint) -> Any:
    """The paramiko client after Remote(ep) connected through the mock."""
    expect(m, Command("true"))
    remote.Remote(ep).connect(deadline_s=5)
    return client_of(m)


def users_ssh_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    """The user's own ~/.ssh/config, for this test: text."""
    user_config = tmp_path / "user_config"
    user_config.write_text(text)
    monkeypatch.setattr(ssh_connect, "USER_SSH_CONFIGS", (user_config,))


def test_vm_connection_trusts_only_the_pinned_key_and_the_lab_key(mock: MockRemote) -> None:
    expect(mock, Command("true"))
    with remote.Remote(VM) as r:
        r.connect(deadline_s=5)
        client = client_of(mock)
        (policy,), _ = client.set_missing_host_key_policy.call_args
        assert isinstance(policy, paramiko.RejectPolicy)
        client.load_system_host_keys.assert_not_called()
        name, keytype, _key = client.get_host_keys.return_value.add.call_args.args
        assert (name, keytype) == ("[127.0.0.1]:10022", "ssh-ed25519")
        kwargs = client.connect.call_args.kwargs
        assert kwargs["look_for_keys"] is False and kwargs["allow_agent"] is False
        assert kwargs["key_filename"] == ["/cache/keys/lab_ed25519"]
        assert (kwargs["hostname"], kwargs["port"], kwargs["username"]) == (
            "127.0.0.1",
            10022,
            "root",
        )


def test_bare_metal_host_uses_known_hosts_and_is_not_localhost(mock: MockRemote) -> None:
    expect(mock, Command("true"))
    ep = remote.Endpoint(host="tdx-1.lab.example", use_ssh_config=True)
    r = remote.Remote(ep)
    r.connect(deadline_s=5)
    client = client_of(mock)
    client.load_system_host_keys.assert_called_once_with()
    (policy,), _ = client.set_missing_host_key_policy.call_args
    assert isinstance(policy, paramiko.RejectPolicy)
    kwargs = client.connect.call_args.kwargs
    assert kwargs["hostname"] == "tdx-1.lab.example"
    assert "allow_agent" not in kwargs  # the user's agent may be used for their hosts


def test_connect_retries_only_until_up(mock: MockRemote) -> None:
    expect(mock, Command("true"))
    client = client_of(mock)
    refused = NoValidConnectionsError({("127.0.0.1", 10022): ConnectionRefusedError()})
    banner = paramiko.SSHException("Error reading SSH protocol banner")
    client.connect.side_effect = [refused, banner, None]
    remote.Remote(VM).connect(deadline_s=5, retry_every_s=0)
    assert client.connect.call_count == 3


def test_changed_host_key_is_never_retried(mock: MockRemote) -> None:
    expect(mock, Command("true"))
    client = client_of(mock)
    key = paramiko.PKey.from_type_string(
        "ssh-ed25519", __import__("base64").b64decode(HOST_KEY.split()[1])
    )
    client.connect.side_effect = paramiko.BadHostKeyException("127.0.0.1", key, key)
    with pytest.raises(InfraError, match="does not match the pinned key"):
        remote.Remote(VM).connect(deadline_s=30, retry_every_s=0)
    assert client.connect.call_count == 1


def test_connect_gives_up_at_the_deadline(mock: MockRemote) -> None:
    expect(mock, Command("true"))
    client_of(mock).connect.side_effect = ConnectionResetError("reset")
    with pytest.raises(InfraError, match="no SSH connection within"):
        remote.Remote(VM).connect(deadline_s=0.05, retry_every_s=0.01)


def test_command_line_is_quoted_and_bounded() -> None:
    cmd = remote.remote_command(["./t", "a b", "$(reboot);"], timeout_s=30, cwd="/var/tmp/x y")
    assert cmd == "cd '/var/tmp/x y' && timeout -k 10 30 ./t 'a b' '$(reboot);'"


def test_unknown_host_key_is_refused_not_retried(mock: MockRemote) -> None:
    expect(mock, Command("true"))
    client = client_of(mock)
    client.connect.side_effect = paramiko.SSHException(
        "Server '[127.0.0.1]:10022' not found in known_hosts"
    )
    with pytest.raises(InfraError, match="host key is not trusted"):
        remote.Remote(VM).connect(deadline_s=30, retry_every_s=0)
    assert client.connect.call_count == 1


@pytest.mark.parametrize("use_ssh_config", [False, True])
def test_every_connection_phase_is_bounded(mock: MockRemote, use_ssh_config: bool) -> None:
    ep = VM if not use_ssh_config else remote.Endpoint(host="tdx-1", use_ssh_config=True)
    kwargs = connected_client(mock, ep).connect.call_args.kwargs
    assert kwargs["timeout"] == ssh_connect.SSH_CONNECT_TIMEOUT_S
    assert kwargs["banner_timeout"] == ssh_connect.SSH_BANNER_TIMEOUT_S
    assert kwargs["auth_timeout"] == ssh_connect.SSH_AUTH_TIMEOUT_S
    assert kwargs["channel_timeout"] == ssh_connect.SSH_CHANNEL_TIMEOUT_S


def test_channel_that_cannot_open_is_an_infra_error(mock: MockRemote) -> None:
    expect(mock, Command("true"))
    r = remote.Remote(VM)
    r.connect(deadline_s=5)
    transport = r.conn.transport
    transport.open_session.side_effect = paramiko.SSHException("Timeout opening channel.")
    with pytest.raises(InfraError, match="could not open an SSH channel"):
        r.read_text("/etc/hostname")
    transport.open_session.assert_called_once_with(timeout=ssh_connect.SSH_CHANNEL_TIMEOUT_S)


def test_a_lab_host_vm_is_reached_through_the_labs_ssh_config(
    mock: MockRemote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.hosts import sshconfig

    users_ssh_config(tmp_path, monkeypatch, "Host *\n    User bob\n    Port 2200\n")
    known = tmp_path / "hv1.known_hosts"
    known.write_text(f"[127.0.0.1]:40022 {HOST_KEY}\n")
    lab_file = tmp_path / "ssh_config"
    lab_file.write_text(
        sshconfig.entry(
            "hv1", port=40022, user="root", key=tmp_path / "lab_ed25519", known_hosts=known
        )
    )
    ep = remote.Endpoint(host="hv1", use_ssh_config=True, ssh_config_files=(lab_file,))
    client = connected_client(mock, ep)
    # The pinned key's file replaces ~/.ssh/known_hosts, as UserKnownHostsFile does.
    client.load_host_keys.assert_called_once_with(str(known))
    client.load_system_host_keys.assert_not_called()
    (policy,), _ = client.set_missing_host_key_policy.call_args
    assert isinstance(policy, paramiko.RejectPolicy)
    kwargs = client.connect.call_args.kwargs
    # The lab's block wins over the user's `Host *` for its own name ...
    assert (kwargs["hostname"], kwargs["port"], kwargs["username"]) == ("127.0.0.1", 40022, "root")
    assert kwargs["key_filename"] == [str(tmp_path / "lab_ed25519")]


def test_other_hosts_still_follow_the_users_ssh_config(
    mock: MockRemote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    users_ssh_config(
        tmp_path, monkeypatch, "Host tdx-1\n    HostName 10.0.0.7\n    User bob\n    Port 2200\n"
    )
    lab_file = tmp_path / "ssh_config"
    lab_file.write_text("Host hv1\n    HostName 127.0.0.1\n")
    ep = remote.Endpoint(host="tdx-1", use_ssh_config=True, ssh_config_files=(lab_file,))
    client = connected_client(mock, ep)
    kwargs = client.connect.call_args.kwargs
    assert (kwargs["hostname"], kwargs["port"], kwargs["username"]) == ("10.0.0.7", 2200, "bob")
    client.load_system_host_keys.assert_called_once_with()
