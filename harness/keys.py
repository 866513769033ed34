"""The lab's SSH keys: one ed25519 client key and the guest's host key, both ours.

Both are generated once per lab cache (never per boot) and baked into the image, so the
host key is known before the first boot and pinned from the start: the SSH layer trusts
exactly this key (paramiko RejectPolicy), never whatever the guest presents.

Guest SSH is reached on 127.0.0.1 at a port that changes with every boot, and
known_hosts cannot wildcard ports portably; so the image keeps the bare host key and
callers pin it for the host:port they actually connect to (`host_keys_for`,
`known_hosts_line`).
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from harness.errors import InfraError

CLIENT_KEY = "id_ed25519"
HOST_KEY = "ssh_host_ed25519_key"


@dataclass(frozen=True)
class LabKeys:
    client_key: Path
    client_pubkey: Path
    host_key: Path
    host_pubkey: Path

    @property
    def host_key_line(self) -> str:
        """'ssh-ed25519 AAAA...' (no comment): the pinned host key."""
        return public_key_line(self.host_pubkey)

    def fingerprint(self) -> str:
        """A short digest of both public keys: the image must change when they do."""
        both = self.client_pubkey.read_bytes() + self.host_pubkey.read_bytes()
        return hashlib.sha256(both).hexdigest()[:16]


def _write_private(path: Path, data: bytes) -> None:
    # Created 0600 from the start: ssh refuses keys readable by others.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def generate_pair(private: Path, comment: str) -> None:
    """An OpenSSH-format ed25519 key pair at private and private.pub."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    pub = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    private.parent.mkdir(parents=True, exist_ok=True)
    # Written to temporaries and renamed, so an interrupted run never leaves half a pair.
    tmp_priv = private.with_name(private.name + ".tmp")
    tmp_pub = private.with_name(private.name + ".pub.tmp")
    _write_private(tmp_priv, pem)
    tmp_pub.write_bytes(pub + b" " + comment.encode() + b"\n")
    tmp_pub.replace(private.with_name(private.name + ".pub"))
    tmp_priv.replace(private)


def ensure_keys(directory: Path) -> LabKeys:
    """The lab's keys in directory, generated on first use and reused afterwards.

    Private keys are owner-only (0600) and so is the folder: a readable client key lets
    anyone log in to the lab VM, a readable host key lets anyone impersonate it.
    """
    directory.mkdir(parents=True, exist_ok=True)
    if directory.stat().st_mode & 0o077:
        directory.chmod(0o700)
    keys = LabKeys(
        client_key=directory / CLIENT_KEY,
        client_pubkey=directory / f"{CLIENT_KEY}.pub",
        host_key=directory / HOST_KEY,
        host_pubkey=directory / f"{HOST_KEY}.pub",
    )
    for private, pub, comment in (
        (keys.client_key, keys.client_pubkey, "gmemlab-client"),
        (keys.host_key, keys.host_pubkey, "gmemlab-guest"),
    ):
        if not (private.is_file() and pub.is_file()):
            generate_pair(private, comment)
        elif private.stat().st_mode & 0o077:
            # Loosened since (a copy, a restore from backup): tighten, ssh insists.
            private.chmod(0o600)
    return keys


def public_key_line(pubkey: Path) -> str:
    """'type base64' from an OpenSSH .pub file, comment dropped."""
    fields = pubkey.read_text().split()
    if len(fields) < 2 or not fields[0].startswith("ssh-"):
        raise InfraError(f"{pubkey}: not an OpenSSH public key", "delete it and rerun `lab image`")
    return f"{fields[0]} {fields[1]}"


def host_entry(host: str, port: int) -> str:
    """known_hosts' name for host:port ('[h]:p' unless the port is 22)."""
    return host if port == 22 else f"[{host}]:{port}"


def known_hosts_line(host: str, port: int, key_line: str) -> str:
    return f"{host_entry(host, port)} {key_line}\n"


def write_known_hosts(path: Path, host: str, port: int, key_line: str) -> Path:
    """A known_hosts file holding only the pinned key for host:port (for OpenSSH)."""
    path.write_text(known_hosts_line(host, port, key_line))
    return path


def host_keys_for(host: str, port: int, key_line: str) -> paramiko.HostKeys:
    """paramiko HostKeys that trust key_line, and nothing else, for host:port."""
    keytype, b64 = key_line.split()[:2]
    key = paramiko.PKey.from_type_string(keytype, base64.b64decode(b64))
    host_keys = paramiko.HostKeys()
    host_keys.add(host_entry(host, port), keytype, key)
    return host_keys
