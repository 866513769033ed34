"""The remote layer against fabric's SSH test doubles (no network, no VM)."""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
from fabric.testing.base import Command, MockRemote, Session
from paramiko.ssh_exception import NoValidConnectionsError

from harness import remote
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


@pytest.mark.parametrize(
    ("exit_code", "expect_code", "timed_out", "lost"),
    [
        (0, 0, False, False),
        (1, 1, False, False),
        (4, 4, False, False),
        (124, 124, True, False),
        (-1, None, False, True),
    ],
)
def test_run_maps_exit_status(
    mock: MockRemote, exit_code: int, expect_code: int | None, timed_out: bool, lost: bool
) -> None:
    expect(mock, Command("timeout -k 10 30 ./t", out=b"ok 1 a\n", exit=exit_code))
    r = remote.Remote(VM)
    r.connect(deadline_s=5)
    ran = r.run(["./t"], timeout_s=30)
    assert (ran.exit_code, ran.timed_out, ran.lost) == (expect_code, timed_out, lost)
    assert ran.ok == (exit_code == 0)
    if not lost:
        assert ran.stdout == "ok 1 a\n"


def test_run_local_timeout_becomes_timed_out(
    mock: MockRemote, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(remote, "_KILL_GRACE_S", 0)
    monkeypatch.setattr(remote, "_LOCAL_GRACE_S", 0)
    # The channel reports no exit status for ~0.5 s; the local bound is 0.1 s.
    expect(mock, Command(out=b"partial\n", waits=50))
    r = remote.Remote(VM)
    r.connect(deadline_s=5)
    ran = r.run(["sleep", "600"], timeout_s=0.1)
    assert ran.timed_out


def test_run_streams_output_to_a_log(mock: MockRemote, tmp_path: Path) -> None:
    expect(mock, Command(out=b"TAP version 13\nok 1 a\n", err=b"warn\n", exit=1))
    r = remote.Remote(VM)
    r.connect(deadline_s=5)
    log = tmp_path / "raw" / "t.log"
    ran = r.run(["./t"], timeout_s=5, log=log)
    text = log.read_text()
    assert ran.exit_code == 1
    assert text.startswith("$ timeout -k 10 5 ./t\n")
    assert "ok 1 a" in text and "warn" in text


def test_push_sends_one_tar_stream(mock: MockRemote, tmp_path: Path) -> None:
    (tmp_path / "guest").mkdir()
    (tmp_path / "guest" / "test_a.py").write_text("def test_a(): pass\n")
    (tmp_path / "guest" / "__pycache__").mkdir()
    (tmp_path / "guest" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (tmp_path / "st").mkdir()
    (tmp_path / "st" / "guest_memfd_test").write_bytes(b"\x7fELF")
    dest = "/var/tmp/gmemlab/payload"
    (channel,) = expect(mock, Command(f"rm -rf {dest} && mkdir -p {dest} && tar -xzf - -C {dest}"))
    r = remote.Remote(VM)
    r.connect(deadline_s=5)
    sent = r.push([(tmp_path / "guest", "guest"), (tmp_path / "st", "selftests")], dest)
    channel.exec_command.assert_called_once_with(
        f"rm -rf {dest} && mkdir -p {dest} && tar -xzf - -C {dest}"
    )
    data = channel._stdin.getvalue()
    assert len(data) == sent
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
        names = sorted(tar.getnames())
    assert names == [
        "guest",
        "guest/test_a.py",
        "selftests",
        "selftests/guest_memfd_test",
    ]


def test_push_failure_names_the_cause(mock: MockRemote, tmp_path: Path) -> None:
    expect(mock, Command(err=b"tar: write error: No space left on device\n", exit=2))
    r = remote.Remote(VM)
    r.connect(deadline_s=5)
    with pytest.raises(InfraError, match="No space left"):
        r.push([(tmp_path, "x")], "/var/tmp/p")


def tar_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, body in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return buf.getvalue()


def test_fetch_unpacks_results(mock: MockRemote, tmp_path: Path) -> None:
    archive = tar_of({"./junit.xml": b"<testsuites/>", "./raw/out.log": b"ok\n"})
    expect(mock, Command("tar -cf - -C /var/tmp/gmemlab/out .", out=archive))
    r = remote.Remote(VM)
    r.connect(deadline_s=5)
    got = r.fetch("/var/tmp/gmemlab/out", tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in got) == [
        "junit.xml",
        "raw/out.log",
    ]
    assert (tmp_path / "raw" / "out.log").read_text() == "ok\n"


def test_fetch_refuses_paths_outside_the_folder(mock: MockRemote, tmp_path: Path) -> None:
    expect(mock, Command(out=tar_of({"../escape": b"x"})))
    r = remote.Remote(VM)
    r.connect(deadline_s=5)
    with pytest.raises(InfraError, match="refusing the archive"):
        r.fetch("/out", tmp_path / "dest")
    assert not (tmp_path / "escape").exists()


def test_read_text_missing_file_is_none(mock: MockRemote) -> None:
    expect(mock, Command("cat -- /nope", exit=1), Command("cat -- /etc/hostname", out=b"vm\n"))
    r = remote.Remote(VM)
    r.connect(deadline_s=5)
    assert r.read_text("/nope") is None
    assert r.read_text("/etc/hostname") == "vm\n"


def test_unknown_host_key_is_refused_not_retried(mock: MockRemote) -> None:
    expect(mock, Command("true"))
    client = client_of(mock)
    client.connect.side_effect = paramiko.SSHException(
        "Server '[127.0.0.1]:10022' not found in known_hosts"
    )
    with pytest.raises(InfraError, match="host key is not trusted"):
        remote.Remote(VM).connect(deadline_s=30, retry_every_s=0)
    assert client.connect.call_count == 1


def test_transport_dying_mid_command_is_lost(mock: MockRemote) -> None:
    expect(mock, Command("true"))
    r = remote.Remote(VM)
    r.connect(deadline_s=5)

    def boom(*args: object, **kwargs: object) -> None:
        raise paramiko.SSHException("SSH session not active")

    r.conn.run = boom
    ran = r.run(["sleep", "600"], timeout_s=900)
    assert ran.lost and ran.exit_code is None and "not active" in ran.error


@pytest.mark.parametrize("use_ssh_config", [False, True])
def test_every_connection_phase_is_bounded(mock: MockRemote, use_ssh_config: bool) -> None:
    expect(mock, Command("true"))
    ep = VM if not use_ssh_config else remote.Endpoint(host="tdx-1", use_ssh_config=True)
    remote.Remote(ep).connect(deadline_s=5)
    kwargs = client_of(mock).connect.call_args.kwargs
    assert kwargs["timeout"] == remote.SSH_CONNECT_TIMEOUT_S
    assert kwargs["banner_timeout"] == remote.SSH_BANNER_TIMEOUT_S
    assert kwargs["auth_timeout"] == remote.SSH_AUTH_TIMEOUT_S
    assert kwargs["channel_timeout"] == remote.SSH_CHANNEL_TIMEOUT_S


def test_channel_that_cannot_open_is_an_infra_error(mock: MockRemote) -> None:
    expect(mock, Command("true"))
    r = remote.Remote(VM)
    r.connect(deadline_s=5)
    transport = r.conn.transport
    transport.open_session.side_effect = paramiko.SSHException("Timeout opening channel.")
    with pytest.raises(InfraError, match="could not open an SSH channel"):
        r.read_text("/etc/hostname")
    transport.open_session.assert_called_once_with(timeout=remote.SSH_CHANNEL_TIMEOUT_S)


def test_a_lab_host_vm_is_reached_through_the_labs_ssh_config(
    mock: MockRemote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.hosts import sshconfig

    user_config = tmp_path / "user_config"
    user_config.write_text("Host *\n    User bob\n    Port 2200\n")
    monkeypatch.setattr(remote, "USER_SSH_CONFIGS", (user_config,))
    known = tmp_path / "hv1.known_hosts"
    known.write_text(f"[127.0.0.1]:40022 {HOST_KEY}\n")
    lab_file = tmp_path / "ssh_config"
    lab_file.write_text(
        sshconfig.entry(
            "hv1", port=40022, user="root", key=tmp_path / "lab_ed25519", known_hosts=known
        )
    )
    expect(mock, Command("true"))
    ep = remote.Endpoint(host="hv1", use_ssh_config=True, ssh_config_files=(lab_file,))
    remote.Remote(ep).connect(deadline_s=5)
    client = client_of(mock)
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
    user_config = tmp_path / "user_config"
    user_config.write_text("Host tdx-1\n    HostName 10.0.0.7\n    User bob\n    Port 2200\n")
    monkeypatch.setattr(remote, "USER_SSH_CONFIGS", (user_config,))
    lab_file = tmp_path / "ssh_config"
    lab_file.write_text("Host hv1\n    HostName 127.0.0.1\n")
    expect(mock, Command("true"))
    ep = remote.Endpoint(host="tdx-1", use_ssh_config=True, ssh_config_files=(lab_file,))
    remote.Remote(ep).connect(deadline_s=5)
    kwargs = client_of(mock).connect.call_args.kwargs
    assert (kwargs["hostname"], kwargs["port"], kwargs["username"]) == ("10.0.0.7", 2200, "bob")
    client_of(mock).load_system_host_keys.assert_called_once_with()
