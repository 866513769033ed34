"""Opening an SSH connection to an endpoint: its config, its keys and whom it trusts.

Trust is explicit: the host key is pinned (the VM's comes from the image; a bare-metal
host's from the user's known_hosts) and an unknown or changed key is refused
(RejectPolicy, never AutoAddPolicy). For the VM only the lab's key is offered: no agent,
no ~/.ssh keys, no ~/.ssh/config. A bare-metal host is reached through the user's SSH
config (aliases, ProxyJump, agent), so nothing here assumes 127.0.0.1.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paramiko
from fabric import Config, Connection
from paramiko.ssh_exception import NoValidConnectionsError

if TYPE_CHECKING:
    from harness.remote import Endpoint

# Each phase of opening a session has its own deadline. paramiko's defaults are 15 s for
# the banner, 30 s for authentication and an hour to open a channel, so a guest that
# stops answering without dying (paused on a full disk, stopped) would hold one attempt
# for up to an hour; with these, one attempt gives up within about 30 s (TCP connect,
# then the first of banner/auth/channel that stalls).
SSH_CONNECT_TIMEOUT_S = 10
SSH_BANNER_TIMEOUT_S = 10
SSH_AUTH_TIMEOUT_S = 10
SSH_CHANNEL_TIMEOUT_S = 10


def connection(ep: Endpoint, connect_timeout: int) -> Connection:
    connect_kwargs: dict[str, Any] = {
        "banner_timeout": SSH_BANNER_TIMEOUT_S,
        "auth_timeout": SSH_AUTH_TIMEOUT_S,
        "channel_timeout": SSH_CHANNEL_TIMEOUT_S,
    }
    if ep.use_ssh_config:
        config = Config(ssh_config=ssh_config(ep.ssh_config_files))
    else:
        # An explicit, empty SSHConfig stops fabric from reading the user's files.
        config = Config(ssh_config=paramiko.SSHConfig())
        connect_kwargs |= {"look_for_keys": False, "allow_agent": False}
    if ep.key_file is not None:
        connect_kwargs["key_filename"] = [str(ep.key_file)]
    conn = Connection(
        ep.host,
        user=ep.user,
        port=ep.port,
        config=config,
        connect_timeout=connect_timeout,
        connect_kwargs=connect_kwargs,
    )
    # fabric installs AutoAddPolicy in its constructor; an unknown key must be refused.
    conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    if ep.host_key_line is not None:
        from harness import keys  # the VM stage's pinning helper

        pinned = keys.host_keys_for(conn.host, conn.port, ep.host_key_line)
        trusted = conn.client.get_host_keys()
        for name in pinned:
            for keytype, key in pinned[name].items():
                trusted.add(name, keytype, key)
    else:
        # OpenSSH's rule: UserKnownHostsFile, where the SSH config sets it, replaces
        # ~/.ssh/known_hosts (paramiko does not read that option itself).
        known = conn.ssh_config.get("userknownhostsfile") if ep.use_ssh_config else None
        if known:
            whole = Path(known).expanduser()
            for file in (
                [whole] if whole.exists() else [Path(w).expanduser() for w in known.split()]
            ):
                with contextlib.suppress(FileNotFoundError):
                    conn.client.load_host_keys(str(file))
        else:
            conn.client.load_system_host_keys()
    return conn


USER_SSH_CONFIGS = (Path("~/.ssh/config"), Path("/etc/ssh/ssh_config"))


def ssh_config(first: Sequence[Path] = ()) -> paramiko.SSHConfig:
    """The SSH config a bare-metal host is looked up in: first (in order), then the
    user's ~/.ssh/config and the system's (fabric's defaults); for each option the
    first file that sets it wins, as in OpenSSH."""
    parsed = paramiko.SSHConfig()
    for path in (*first, *USER_SSH_CONFIGS):
        try:
            with path.expanduser().open() as f:
                parsed.parse(f)
        except (FileNotFoundError, NotADirectoryError):
            continue
    return parsed


# Failures that mean "not reachable yet"; a wrong host key or refused key never are.
NOT_YET: tuple[type[BaseException], ...] = (
    NoValidConnectionsError,
    TimeoutError,
    ConnectionError,
    EOFError,
    OSError,
)
