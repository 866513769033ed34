"""The SSH side of the host stage against fabric's test doubles (no network)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
from fabric.testing.base import Command, MockRemote, Session
from paramiko.ssh_exception import NoValidConnectionsError

from harness.errors import InfraError
from harness.hosts import shell as hshell
from harness.hosts.target import HostTarget


@pytest.fixture
def mock() -> Iterator[MockRemote]:
    m = MockRemote(enable_sftp=True)
    yield m
    m.stop()


def expect(m: MockRemote, *commands: Command) -> list[Any]:
    return list(m.expect_sessions(Session(commands=list(commands), enable_sftp=True)))


def client_of(m: MockRemote) -> Any:
    return m.sessions[0].client


def test_target_endpoint_uses_the_users_ssh_setup() -> None:
    ep = HostTarget(name="tdx-1", ssh="root@tdx-1.lab.example").endpoint()
    assert (ep.host, ep.user, ep.use_ssh_config) == ("tdx-1.lab.example", "root", True)
    assert ep.key_file is None and ep.host_key_line is None
    alias = HostTarget(name="t", ssh="tdx-1").endpoint()
    assert (alias.host, alias.user) == ("tdx-1", None)


def test_connector_runs_and_puts_over_a_pinned_session(mock: MockRemote, tmp_path: Path) -> None:
    expect(mock, Command("timeout -k 10 5 uname -r", out=b"7.3.4\n"))
    connect = hshell.ssh_connector(HostTarget(name="t", ssh="root@tdx-1").endpoint())
    sh = connect(5.0)
    client = client_of(mock)
    (policy,), _ = client.set_missing_host_key_policy.call_args
    assert isinstance(policy, paramiko.RejectPolicy)
    client.load_system_host_keys.assert_called_once_with()
    ran = sh.run(["uname", "-r"], timeout_s=5)
    assert ran.ok and ran.stdout == "7.3.4\n"
    image = tmp_path / "bzImage"
    image.write_bytes(b"MZ")
    sh.put(image, "/var/tmp/gmemlab/kexec.x/bzImage")
    sftp = mock.sessions[0].sftp
    kwargs = sftp.put.call_args.kwargs
    assert kwargs["localpath"].endswith(str(image))  # fabric's fake abspath prefixes it
    assert kwargs["remotepath"] == "/var/tmp/gmemlab/kexec.x/bzImage"
    sh.close()


def test_put_failure_names_the_file(mock: MockRemote, tmp_path: Path) -> None:
    expect(mock, Command("true"))
    sh = hshell.ssh_connector(HostTarget(name="t", ssh="h").endpoint())(5.0)
    mock.sessions[0].sftp.put.side_effect = OSError("Failure")
    with pytest.raises(InfraError, match="copying bzImage to /x/bzImage failed"):
        sh.put(tmp_path / "bzImage", "/x/bzImage")


def test_not_up_is_not_reachable_but_a_bad_key_is_final(mock: MockRemote) -> None:
    # One SSH client per attempt to connect: a session each.
    mock.expect_sessions(Session(commands=[Command("true")]), Session(commands=[Command("true")]))
    down, bad_key = (s.client for s in mock.sessions)
    down.connect.side_effect = NoValidConnectionsError({("h", 22): ConnectionRefusedError()})
    bad_key.connect.side_effect = paramiko.SSHException("Server 'h' not found in known_hosts")
    connect = hshell.ssh_connector(HostTarget(name="t", ssh="h").endpoint(), retry_s=0.01)
    with pytest.raises(hshell.NotReachable):
        connect(0.05)
    with pytest.raises(InfraError, match="host key is not trusted") as err:
        connect(30)
    assert not isinstance(err.value, hshell.NotReachable)
