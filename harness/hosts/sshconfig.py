"""The lab's own SSH config file: one Host block per running lab host VM.

`lab host-vm up NAME` writes a block (HostName 127.0.0.1, the forwarded port, the lab's
key, a known_hosts file holding only the image's pinned host key, StrictHostKeyChecking
yes) and `down NAME` removes it. A host target reads this file before the user's
~/.ssh/config (harness.ssh_connect.ssh_config), so `hosts: NAME: {ssh: NAME}` in lab.yaml
reaches the VM exactly as a real host is reached through the user's config. OpenSSH
reads it with `ssh -F <file> NAME`, or through an `Include` of it in ~/.ssh/config.

Each block lives in its own file under the cache (hosts/<name>/ssh_config); the combined
file is rewritten from them on every change, so two VMs never clobber each other.
"""

from __future__ import annotations

import os
from pathlib import Path

from harness import names
from harness.errors import UserError
from harness.paths import cache_dir, cache_root

ENTRY = "ssh_config"


def hosts_dir() -> Path:
    return cache_dir("hosts")


def path() -> Path:
    """The combined file (it may not exist: no host VM was ever started)."""
    return cache_root() / "hosts" / ENTRY


def check_name(name: str) -> str:
    # It becomes a Host pattern and a folder name: nothing that could add a pattern
    # (blank, '*', '!', ',') or leave the folder.
    if not names.is_safe_name(name):
        raise UserError(
            f"host VM name {name!r} is not a safe name",
            "use letters, digits, '.', '_', '-' (starting with a letter or digit)",
        )
    return name


def entry(name: str, *, port: int, user: str, key: Path, known_hosts: Path) -> str:
    return "\n".join(
        [
            f"# lab host VM {name} (written by `lab host-vm up`, removed by `down`)",
            f"Host {name}",
            "    HostName 127.0.0.1",
            f"    Port {port}",
            f"    User {user}",
            f'    IdentityFile "{key}"',
            "    IdentitiesOnly yes",
            f'    UserKnownHostsFile "{known_hosts}"',
            "    StrictHostKeyChecking yes",
            "",
        ]
    )


def write_entry(name: str, text: str) -> Path:
    folder = cache_dir("hosts", check_name(name))
    _write(folder / ENTRY, text)
    return _rebuild()


def remove_entry(name: str) -> Path:
    (hosts_dir() / check_name(name) / ENTRY).unlink(missing_ok=True)
    return _rebuild()


def _rebuild() -> Path:
    blocks = sorted(p for p in hosts_dir().glob(f"*/{ENTRY}") if p.is_file())
    _write(path(), "".join(p.read_text() + "\n" for p in blocks))
    return path()


def _write(target: Path, text: str) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(target)
