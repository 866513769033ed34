"""A lab VM standing in for a bare-metal host (`lab host-vm up NAME` / `down NAME`).

Where there is no TDX (or any spare) machine, the host stage is proven on a VM:

- the lab image booted with a stock lab kernel under systemd (so `systemctl kexec` and
  `systemctl reboot` work), detached, its serial console in a file;
- QEMU without -no-reboot: the VM survives the kexec into the kernel under test and
  the restore's reboot, and since the stock kernel is QEMU's -kernel, every reboot
  (the restore, or panic=30 after a test kernel panicked) comes back on it;
- SSH forwarded on 127.0.0.1 only; the image's pinned host key in a known_hosts file
  of its own, and a Host NAME block in the lab's SSH config file
  (harness/hosts/sshconfig.py), so lab.yaml's `hosts: NAME: {ssh: NAME}` reaches it
  through the same path as a real host: the SSH config, never a lab-only shortcut.

Its files live in <cache>/hosts/NAME/: state.json (pid, port, QMP socket; a state whose
QEMU is gone is stale), ssh_config (its block), known_hosts, console.log and the disk
overlay. Nested KVM inside it works as in the VM target (kvm_amd nested under TCG's
-cpu max, or the host CPU's with KVM).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness import keys
from harness.config import LabConfig
from harness.errors import UserError
from harness.hosts import sshconfig
from harness.image import Image
from harness.paths import cache_dir, cache_root
from harness.qemu import boot as qemu_boot
from harness.qemu import detached
from harness.qemu.detached import DetachedVm

STATE = "state.json"
KNOWN_HOSTS = "known_hosts"


@dataclass(frozen=True)
class HostVm:
    name: str
    state: DetachedVm

    @property
    def folder(self) -> Path:
        return self.state.run_dir

    def console_argv(self) -> list[str]:
        """A console command for lab.yaml: follows the VM's serial console from now on
        (it stays the same file across kexec and reboot)."""
        return ["tail", "-n", "0", "-F", str(self.state.console_log)]

    def lab_yaml(self) -> str:
        console = ", ".join(f'"{w}"' for w in self.console_argv())
        return f"hosts:\n  {self.name}:\n    ssh: {self.name}\n    console: [{console}]\n"


def folder_of(name: str) -> Path:
    return cache_root() / "hosts" / sshconfig.check_name(name)


def find(name: str) -> HostVm | None:
    """NAME's running host VM; None (and its stale files cleaned) when there is none."""
    state = detached.load_state(folder_of(name) / STATE)
    if state is None:
        sshconfig.remove_entry(name)
        return None
    return HostVm(name, state)


def running() -> list[HostVm]:
    root = cache_root() / "hosts"
    found = (find(p.parent.name) for p in sorted(root.glob(f"*/{STATE}")))
    return [vm for vm in found if vm is not None]


def up(lab: LabConfig, name: str, bzimage: Path, image: Image) -> HostVm:
    """Boot NAME detached and write its SSH config entry; UserError if it runs."""
    if find(name) is not None:
        raise UserError(
            f"host VM {name} is already up",
            f"use it, or `lab host-vm down {name}` first",
        )
    folder = cache_dir("hosts", name)
    systemd = lab.model_copy(update={"vm": lab.vm.model_copy(update={"init": "systemd"})})
    machine = qemu_boot.boot(systemd, bzimage, image, folder, tether=False, reboot=True)
    try:
        state = detached.save_state(machine, folder / STATE)
        known = keys.write_known_hosts(
            folder / KNOWN_HOSTS, machine.ssh_host, machine.ssh_port, image.host_key_line
        )
        entry = sshconfig.entry(
            name, port=machine.ssh_port, user=machine.user, key=image.client_key, known_hosts=known
        )
        sshconfig.write_entry(name, entry)
    except BaseException:
        machine.stop()
        (folder / STATE).unlink(missing_ok=True)
        raise
    return HostVm(name, state)


def down(name: str) -> HostVm | None:
    """Stop NAME and remove its SSH config entry; None when it was not running."""
    vm = find(name)
    if vm is not None:
        detached.stop_detached(vm.state, folder_of(name) / STATE)
    sshconfig.remove_entry(name)
    return vm
