"""`lab boot`: boot a kernel in the lab VM; a shell, a command (`-- CMD`), or detached."""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

from harness import crash, interrupt, session
from harness.commands import run as run_command
from harness.config import LabConfig
from harness.errors import InfraError, UserError
from harness.image import ensure_image
from harness.paths import cache_dir
from harness.qemu import detached, nested
from harness.qemu.boot import boot
from harness.qemu.machine import Machine, discard_overlay


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "boot",
        help="boot a kernel in the lab VM: a shell, `-- CMD`, or --detach",
        description=(
            "Boot a built kernel (lab.yaml's defaults, --kernel/--config, a series with "
            "--mbox/--base, or --bzimage) on "
            "a fresh overlay of the lab image. With `-- CMD...` run CMD over SSH with its "
            "output streamed, shut down and exit with CMD's status; on a terminal without "
            "CMD open a shell and shut down after it; with --detach leave the VM running "
            "for `lab ssh` and `lab stop`."
        ),
    )
    parser.add_argument("--kernel", help="a kernel name from lab.yaml (default: defaults.kernel)")
    parser.add_argument("--config", help="a config set from lab.yaml (default: defaults.config)")
    run_command.add_series_arguments(parser)
    parser.add_argument("--bzimage", type=Path, help="boot this kernel image instead of a build")
    parser.add_argument("--initrd", type=Path, help="an initramfs (for distribution kernels)")
    parser.add_argument(
        "--init", choices=["lean", "systemd"], help="guest init (default: vm.init in lab.yaml)"
    )
    parser.add_argument("--append", action="append", default=[], help="extra kernel parameter")
    parser.add_argument("--detach", action="store_true", help="leave the VM running")
    parser.add_argument(
        "--network",
        action="store_true",
        help="let the guest reach the network (default: only its SSH forward, restrict=on)",
    )
    parser.add_argument("--timeout", type=float, default=None, help="seconds for CMD")
    parser.add_argument("--run-dir", type=Path, help="where console.log etc. go")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD...: run CMD and exit")
    parser.set_defaults(func=run)


def resolve_bzimage(args: argparse.Namespace, lab: LabConfig, kernel: str | None = None) -> Path:
    """--bzimage, else the build of `kernel` (default --kernel, then defaults.kernel)."""
    if args.bzimage is not None:
        if not args.bzimage.is_file():
            raise UserError(f"--bzimage {args.bzimage}: no such file", "give a kernel image")
        return Path(args.bzimage)
    from harness.build import build_kernel, prepare_request  # cached: builds what is missing

    kernel = kernel or args.kernel or lab.defaults.kernel
    build = build_kernel(prepare_request(lab, kernel, args.config or lab.defaults.config))
    return Path(build.bzimage)


def run(args: argparse.Namespace, lab: LabConfig) -> int:
    # SIGTERM takes the same path as Ctrl-C, so the VM is torn down either way.
    with interrupt.handlers():
        return _run(args, lab)


def new_run_dir() -> Path:
    """A fresh folder per boot: two `lab boot` started in the same second must not share
    one (the second would fail on the overlay's write lock)."""
    return Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=cache_dir("vm")))


def _run(args: argparse.Namespace, lab: LabConfig) -> int:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if args.init:
        lab = lab.model_copy(update={"vm": lab.vm.model_copy(update={"init": args.init})})
    detach = args.detach or (not cmd and not sys.stdin.isatty())
    if detach and detached.load_state() is not None:
        raise UserError("a detached lab VM is already running", "`lab ssh` to it, or `lab stop`")
    lab, chosen = run_command.series_kernel(args, lab)  # --mbox FILE --base NAME
    bzimage = resolve_bzimage(args, lab, chosen)
    image = ensure_image(lab)
    run_dir = args.run_dir or new_run_dir()
    started = time.monotonic()
    machine = boot(
        lab,
        bzimage,
        image,
        run_dir,
        extra_cmdline=args.append,
        tether=not detach,
        initrd=args.initrd,
        # With a command, nested facts are read after it (off the critical path).
        probe_nested=not cmd,
        network=args.network,
        on_retry=lambda why: say(f"{why}: QEMU failed, not the kernel: booting once more"),
    )
    if not cmd:
        say(describe(machine))
    if detach:
        detached.save_state(machine)
        say("left running; reach it with `lab ssh` (or below), end it with `lab stop`:")
        say("  " + shlex.join(machine.ssh_command()))
        return 0
    try:
        return _use(machine, cmd, args, lab, started)
    finally:
        machine.stop()
        discard_overlay(machine.run_dir)


def _use(
    machine: Machine, cmd: list[str], args: argparse.Namespace, lab: LabConfig, started: float
) -> int:
    with machine:
        ep = machine.endpoint()
        if cmd:
            code = session.run_streamed(ep, cmd, timeout_s=args.timeout)
        else:
            code = session.interactive(ep)
        if cmd and machine.alive():
            machine.learn_nested(wait_s=nested.console_wait_s(lab.vm.init))
            say(describe(machine))
        found = machine.crash()
        if found:
            # A WARN fails the run too (DESIGN.md: outcomes), whatever CMD returned.
            kinds = ", ".join(sorted({c.kind for c in found}))
            say(f"the guest kernel reported {kinds}:\n{crash.report(found)}")
            say(f"console: {machine.console_log}")
            return 1
        if code is None:
            raise InfraError(
                "the SSH connection died under the command; QEMU "
                + ("still runs" if machine.alive() else "has exited"),
                f"see the console: {machine.console_log}",
            )
    say(f"done in {time.monotonic() - started:.1f}s (exit {code})")
    return code


def describe(machine: Machine) -> str:
    n = machine.nested_info
    types = ",".join(str(t) for t in n.created) or "none"
    return (
        f"lab VM up in {machine.boot_seconds:.1f}s: accel {machine.accel} "
        f"(-cpu {machine.cpu_model}; {machine.accel_reason}); nested KVM "
        f"{'yes' if machine.nested else 'no'} (VM types {types}; {n.detail}); "
        f"ssh {machine.user}@{machine.ssh_host}:{machine.ssh_port}; run dir {machine.run_dir}"
    )


def say(text: str) -> None:
    print(f"lab: {text}", file=sys.stderr, flush=True)
