"""The settings of one host target, as the host stage needs them.

A small frozen dataclass of its own, so the stage does not depend on lab.yaml's models:
the runner fills it from `hosts.NAME` (harness/config/schema_run.py's HostSpec) and the run's
kernel-command-line parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from harness.hosts import sshconfig
from harness.remote import Endpoint

RestorePolicy = Literal["always", "never"]
InitrdPolicy = Literal["none", "host"]


@dataclass(frozen=True)
class HostTarget:
    name: str
    # An alias from the user's SSH config, or [user@]host.
    ssh: str
    workdir: str = "/var/tmp/gmemlab"
    # What lab.yaml says the host is for ("tdx", "snp", ...); checked against the probe.
    capabilities: tuple[str, ...] = ()
    # A local argv that prints the host's console (IPMI SOL, serial server), run from
    # before the kexec until the kernel answers; empty: no console.
    console: tuple[str, ...] = ()
    # A local argv that power-cycles the host, used only when it does not come back
    # (restore after a kernel that hung); empty: the host is left for a person.
    reset: tuple[str, ...] = ()
    # always: reboot into the host's default kernel after the run; never: leave the test
    # kernel running for debugging.
    restore: RestorePolicy = "always"
    boot_timeout_s: float = 600.0
    # Host-specific kernel parameters (e.g. console=ttyS1,115200n8 for its SOL console).
    cmdline_extra: tuple[str, ...] = ()
    # none: boot the test kernel without an initramfs (root by PARTUUID where the host
    # uses UUID/LABEL); host: pass the host's own initramfs for its running kernel.
    initrd: InitrdPolicy = "none"
    lock_path: str = "/run/gmemlab.lock"

    def endpoint(self) -> Endpoint:
        """The SSH endpoint: the user's SSH config and known_hosts, never a lab key."""
        user, _, host = self.ssh.rpartition("@")
        return Endpoint(
            host=host,
            user=user or None,
            use_ssh_config=True,
            # The lab's host VMs (`lab host-vm up`) are entries of the lab's own file.
            ssh_config_files=(sshconfig.path(),),
        )
