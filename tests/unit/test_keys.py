"""The lab's keys: generated once, private files 0600, the host key pinned per host:port."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import paramiko
import pytest

from harness import keys
from harness.errors import InfraError


def test_generated_once_then_reused(tmp_path: Path) -> None:
    first = keys.ensure_keys(tmp_path)
    content = first.client_key.read_bytes(), first.host_key.read_bytes()
    again = keys.ensure_keys(tmp_path)
    assert (again.client_key.read_bytes(), again.host_key.read_bytes()) == content
    assert first.fingerprint() == again.fingerprint()


def test_private_keys_are_owner_only_and_load_in_paramiko(tmp_path: Path) -> None:
    lk = keys.ensure_keys(tmp_path)
    for private in (lk.client_key, lk.host_key):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
        key = paramiko.Ed25519Key.from_private_key_file(str(private))
        pub = private.with_name(private.name + ".pub").read_text().split()
        assert pub[0] == "ssh-ed25519"
        assert key.get_base64() == pub[1]


def test_loose_permissions_are_tightened(tmp_path: Path) -> None:
    lk = keys.ensure_keys(tmp_path)
    lk.client_key.chmod(0o644)
    keys.ensure_keys(tmp_path)
    assert stat.S_IMODE(lk.client_key.stat().st_mode) == 0o600


def test_each_lab_cache_gets_its_own_keys(tmp_path: Path) -> None:
    a = keys.ensure_keys(tmp_path / "a")
    b = keys.ensure_keys(tmp_path / "b")
    assert a.host_key_line != b.host_key_line
    assert a.fingerprint() != b.fingerprint()


def test_host_key_line_has_no_comment(tmp_path: Path) -> None:
    lk = keys.ensure_keys(tmp_path)
    assert lk.host_pubkey.read_text().strip().endswith("gmemlab-guest")
    assert lk.host_key_line.split() == lk.host_pubkey.read_text().split()[:2]


def test_not_a_public_key_is_an_infra_error(tmp_path: Path) -> None:
    bad = tmp_path / "x.pub"
    bad.write_text("garbage\n")
    with pytest.raises(InfraError, match="not an OpenSSH public key"):
        keys.public_key_line(bad)


def test_known_hosts_entries_name_the_port() -> None:
    line = "ssh-ed25519 AAAAC3Nza"
    assert keys.known_hosts_line("127.0.0.1", 40022, line) == f"[127.0.0.1]:40022 {line}\n"
    assert keys.known_hosts_line("gmem.example", 22, line) == f"gmem.example {line}\n"


def test_known_hosts_file_is_read_back_by_paramiko(tmp_path: Path) -> None:
    lk = keys.ensure_keys(tmp_path)
    path = keys.write_known_hosts(tmp_path / "known_hosts", "127.0.0.1", 40022, lk.host_key_line)
    loaded = paramiko.HostKeys(str(path))
    assert list(loaded.keys()) == ["[127.0.0.1]:40022"]


def test_host_keys_trust_exactly_the_pinned_key_at_that_port(tmp_path: Path) -> None:
    lk = keys.ensure_keys(tmp_path)
    other = keys.ensure_keys(tmp_path / "other")
    pinned = keys.host_keys_for("127.0.0.1", 40022, lk.host_key_line)
    mine = paramiko.PKey.from_type_string(
        "ssh-ed25519", base64.b64decode(lk.host_key_line.split()[1])
    )
    theirs = paramiko.PKey.from_type_string(
        "ssh-ed25519", base64.b64decode(other.host_key_line.split()[1])
    )
    assert pinned.check("[127.0.0.1]:40022", mine)
    assert not pinned.check("[127.0.0.1]:40022", theirs)
    assert not pinned.check("[127.0.0.1]:40023", mine)
