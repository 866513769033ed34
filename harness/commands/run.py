"""`lab run`: build -> image -> boot -> suites -> report for one cell; the lab's main job."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness import ab, interrupt, patchset, runner, selection
from harness.config import LabConfig
from harness.errors import UserError
from harness.paths import REPO_ROOT


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "run",
        help="build, boot, run the suites in the VM and write the report",
        description=(
            "Build the kernel (cached), boot it under QEMU (or, with --target HOST, kexec it "
            "on a host from lab.yaml and reboot the host into its own kernel afterwards), "
            "push the guest suite and the KVM selftests over SSH, run the suites and write "
            "results/<run-id>/ with "
            "summary.json, junit.xml, report.html and report.md. Exit 0 all passed or "
            "skipped, 1 a test failed or crashed, 2 infrastructure error, timeout or "
            "missing results, 3 bad input."
        ),
    )
    parser.add_argument(
        "--kernel",
        help="a kernel name from lab.yaml or the path of a kernel tree (default: defaults.kernel)",
    )
    parser.add_argument("--config", help="a config set from lab.yaml (default: defaults.config)")
    add_suite_timeout_argument(parser)
    add_series_arguments(parser)
    parser.add_argument(
        "--suites",
        help="comma-separated suite names from lab.yaml (default: defaults.suites); "
        "SUITE:TEST runs one test of a pytest or kselftest suite (a pytest node id such "
        "as gmem-ioctl:test_guest_memfd.py::test_file_size, or a -k expression)",
    )
    parser.add_argument(
        "--manifest", type=Path, help="reuse a finished build: its manifest.json (from lab build)"
    )
    parser.add_argument(
        "--bzimage", type=Path, help="boot this bzImage (without --manifest no selftests run)"
    )
    parser.add_argument(
        "--target",
        help="qemu (the lab VM) or a host from lab.yaml's hosts:, which gets the kernel by "
        "kexec and is rebooted into its own afterwards (default: defaults.target)",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="S",
        help="a host target held by another run: wait up to S seconds for it (default: "
        "fail at once, naming the holder)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=REPO_ROOT / "results",
        help="where results/<run-id>/ and results/latest go (default: ./results)",
    )
    add_ab_argument(
        parser,
        "also run BASE (a lab.yaml kernel or a tree's path; alone: the kernel's own "
        "git base: commit) with the same config, image and suites, and lead the report "
        "with the comparison; exit 1 if the kernel regressed against BASE",
    )
    parser.set_defaults(func=run)


def add_ab_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """--ab [BASE]: args.ab is None without it, "" alone (the kernel's own git base)."""
    parser.add_argument("--ab", nargs="?", const="", default=None, metavar="BASE", help=help)


def seconds_at_least_1(text: str) -> int:
    """argparse type for a whole number of seconds >= 1 (a bad value exits 3 via argparse)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be at least 1 second")
    return value


def add_suite_timeout_argument(parser: argparse.ArgumentParser) -> None:
    """--suite-timeout SECONDS (lab run, lab mutate): cap every suite's timeout_s."""
    parser.add_argument(
        "--suite-timeout",
        type=seconds_at_least_1,
        metavar="SECONDS",
        help="cap every suite's timeout_s from lab.yaml at SECONDS: a kernel that hangs the "
        "guest then costs minutes, not the suite's whole budget (lab mutate passes it on)",
    )


def add_series_arguments(parser: argparse.ArgumentParser) -> None:
    """--mbox FILE --base NAME: a series from mail onto a lab.yaml kernel (lab run, build,
    boot); series_kernel() reads them."""
    parser.add_argument(
        "--mbox",
        type=Path,
        help="apply this series (an mbox: b4 am, git format-patch --stdout) onto --base "
        "and use the result, as an mbox kernel in lab.yaml would be",
    )
    parser.add_argument(
        "--base", help="with --mbox: the lab.yaml kernel to apply it onto (default: --kernel)"
    )


def series_kernel(args: argparse.Namespace, lab: LabConfig) -> tuple[LabConfig, str | None]:
    """With --mbox: lab plus the series' kernel, and its name; else lab and --kernel."""
    if args.mbox is None:
        if args.base is not None:
            raise UserError("--base needs --mbox", "pass the series' mbox with --mbox FILE")
        return lab, args.kernel
    if getattr(args, "manifest", None) is not None or getattr(args, "bzimage", None) is not None:
        raise UserError(
            "--mbox builds a kernel: it cannot go with --manifest or --bzimage",
            "drop one of them",
        )
    base = args.base or args.kernel or lab.defaults.kernel
    return patchset.with_cli_series(lab, args.mbox, base)


def _series_args(args: argparse.Namespace, lab: LabConfig, kernel: str) -> tuple[str, ...]:
    """--mbox FILE --base NAME again, for the reproducer (the kernel's name is made up)."""
    spec = lab.kernels.get(kernel)
    if args.mbox is None or spec is None or spec.mbox is None:
        return ()
    return ("--mbox", str(args.mbox.resolve()), "--base", spec.mbox.base)


def run(args: argparse.Namespace, lab: LabConfig) -> int:
    picked = (
        [selection.parse(s) for s in args.suites.split(",") if s.strip()]
        if args.suites
        else [selection.Selection(s) for s in lab.defaults.suites]
    )
    if not picked:
        raise UserError("--suites is empty", "name at least one suite from lab.yaml")
    for sel in picked:
        if sel.test is not None:
            lab = selection.narrow(lab, sel)
    names = tuple(dict.fromkeys(sel.suite for sel in picked))
    if args.suite_timeout is not None:
        lab = selection.cap_timeouts(lab, args.suite_timeout)
    if args.wait < 0:
        raise UserError(f"--wait {args.wait}: must be 0 or more seconds", "pass --wait 0 or more")
    for path in (args.manifest, args.bzimage):
        if path is not None and not path.is_file():
            raise UserError(f"no such file: {path}", "check the path (lab build prints it)")
    lab, chosen = series_kernel(args, lab)
    kernel = chosen or lab.defaults.kernel
    config_name = args.config or lab.defaults.config
    if args.manifest is not None:
        # A reused build names its own kernel and config (the cell's name).
        from harness.build import load_build

        reused = load_build(args.manifest)
        kernel = args.kernel or reused.kernel
        config_name = args.config or reused.config_name
    request = runner.RunRequest(
        kernel=kernel,
        config=config_name,
        suites=names,
        results_root=args.results.resolve(),
        manifest=args.manifest.resolve() if args.manifest else None,
        bzimage=args.bzimage.resolve() if args.bzimage else None,
        target=args.target or lab.defaults.target,
        wait_s=args.wait,
        series_args=_series_args(args, lab, kernel),
    )
    # Ctrl-C and SIGTERM stop the run within seconds, whatever the guest is doing: the
    # VM is stopped and what was collected is written (harness/interrupt.py).
    with interrupt.handlers():
        if args.ab is not None:
            return ab.run_ab(lab, request, args.ab, runner.Progress(sys.stderr))
        return runner.run(lab, request, runner.Progress(sys.stderr))
