"""`lab host-vm up|down|list`: lab VMs standing in for bare-metal hosts (harness/hostvm.py)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from harness import hostvm
from harness.config import LabConfig
from harness.errors import InfraError
from harness.hosts import probe, sshconfig
from harness.hosts.shell import ssh_connector
from harness.hosts.target import HostTarget
from harness.image import ensure_image


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "host-vm",
        help="a lab VM standing in for a bare-metal host: up NAME, down NAME, list",
        description=(
            "up NAME boots the lab image with a stock lab kernel (systemd, survives kexec "
            "and reboot; see `lab host-vm up --help` for which kernel), leaves it running "
            "and writes a Host NAME entry (127.0.0.1, its "
            "forwarded port, the lab key, the image's pinned host key) into the lab's SSH "
            "config file, so `hosts: NAME: {ssh: NAME}` in lab.yaml reaches it like a real "
            "host. down NAME stops it and removes the entry."
        ),
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    up = actions.add_parser(
        "up",
        help="boot NAME and write its SSH config entry",
        description=(
            "Boot NAME on a stock kernel of its own, the one the test kernel is kexec'ed "
            "from and comes back to: built (cached) from lab.yaml's defaults.kernel and "
            "defaults.config unless --kernel, --config or --bzimage say otherwise. When "
            "that kernel cannot be fetched (its git URL unreachable, e.g. offline), pass "
            "--kernel mainline, Debian's baseline, as for lab build, boot and run."
        ),
    )
    up.add_argument("name")
    up.add_argument(
        "--kernel",
        help="its own kernel, a lab.yaml kernel name (default: defaults.kernel; "
        "offline: --kernel mainline)",
    )
    up.add_argument("--config", help="a config set from lab.yaml (default: defaults.config)")
    up.add_argument("--bzimage", type=Path, help="boot this kernel image instead of a build")
    up.set_defaults(func=run_up)
    down = actions.add_parser("down", help="stop NAME and remove its SSH config entry")
    down.add_argument("name")
    down.set_defaults(func=run_down)
    listing = actions.add_parser("list", help="the running host VMs")
    listing.set_defaults(func=run_list)


def say(text: str) -> None:
    print(f"lab: {text}", file=sys.stderr, flush=True)


def run_up(args: argparse.Namespace, lab: LabConfig) -> int:
    from harness.commands.boot import resolve_bzimage  # builds what is missing (cached)

    sshconfig.check_name(args.name)
    bzimage = resolve_bzimage(args, lab)
    image = ensure_image(lab)
    start = time.monotonic()
    vm = hostvm.up(lab, args.name, bzimage, image)
    say(
        f"host VM {vm.name} up in {time.monotonic() - start:.0f}s "
        f"(pid {vm.state.pid}, ssh port {vm.state.endpoint.port})"
    )
    # Reach it the way the host stage will: through the lab's SSH config entry.
    target = HostTarget(name=vm.name, ssh=vm.name)
    try:
        shell = ssh_connector(target.endpoint())(60.0)
        try:
            found = probe.run(shell)
        finally:
            shell.close()
    except InfraError as exc:
        say(f"the host VM runs, but the host probe over its SSH entry failed: {exc.message}")
        return exc.exit_code
    for cap in ("kvm", "kexec", "tdx"):
        ok, why = found.capability(cap)
        say(f"  {cap}: {'yes' if ok else 'no'} ({why})")
    say(f"  kernel: {found.proc_version}")
    say(f"SSH config entry in {sshconfig.path()} (OpenSSH: ssh -F {sshconfig.path()} {vm.name})")
    say(f"in lab.yaml:\n{vm.lab_yaml()}")
    say(f"end it with `lab host-vm down {vm.name}`")
    return 0


def run_down(args: argparse.Namespace, lab: LabConfig) -> int:
    vm = hostvm.down(args.name)
    if vm is None:
        say(f"no host VM {args.name} is running")
    else:
        say(f"stopped host VM {vm.name} (pid {vm.state.pid}); its files: {vm.folder}")
    return 0


def run_list(args: argparse.Namespace, lab: LabConfig) -> int:
    for vm in hostvm.running():
        print(f"{vm.name}\tpid {vm.state.pid}\t127.0.0.1:{vm.state.endpoint.port}\t{vm.folder}")
    return 0
