"""`lab build`: source -> config -> kernel + selftests; prints manifest.json's path last."""

from __future__ import annotations

import argparse

from harness.build import build_kernel, configure_kernel, prepare_request
from harness.commands import run as run_command
from harness.config import LabConfig
from harness.kconfig import require_verified


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "build",
        help="build a kernel and its KVM selftests (cached)",
        description=(
            "Fetch the kernel source, merge and verify the config fragments, build "
            "bzImage and the KVM selftests out of tree under the lab cache. The last "
            "line of output is the path of the build's manifest.json."
        ),
    )
    parser.add_argument(
        "--kernel",
        default=None,
        help="a kernel name from lab.yaml (series, mainline, ...) or the path of a "
        "kernel tree (default: defaults.kernel)",
    )
    parser.add_argument(
        "--config",
        default=None,
        help="a config set name from lab.yaml (default: defaults.config)",
    )
    run_command.add_series_arguments(parser)
    parser.add_argument(
        "--config-only",
        action="store_true",
        help="stop after merging and verifying the config; print the .config path last",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, lab: LabConfig) -> int:
    lab, chosen = run_command.series_kernel(args, lab)
    kernel = chosen or lab.defaults.kernel
    config_name = args.config or lab.defaults.config
    if args.config_only:
        tree, cfg = configure_kernel(lab, kernel, config_name)
        require_verified(cfg, tree)
        print(cfg.path, flush=True)
        return 0
    build = build_kernel(prepare_request(lab, kernel, config_name))
    # Scripts read the last line: keep it the bare path.
    print(build.manifest, flush=True)
    return 0
