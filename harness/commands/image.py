"""`lab image`: build the guest image, or reuse the cached one for an unchanged recipe."""

from __future__ import annotations

import argparse

from harness.config import LabConfig
from harness.image import ensure_image, prune


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "image",
        help="build the guest image (reused while the recipe is unchanged)",
        description=(
            "Build the Debian root filesystem of lab.yaml's image recipe into a qcow2 base "
            "under the lab cache, with the lab's SSH keys baked in. An unchanged recipe "
            "reuses the cached image. The last line is the base image's path."
        ),
    )
    parser.add_argument(
        "--prune", action="store_true", help="delete the cached images of other recipes"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, lab: LabConfig) -> int:
    image = ensure_image(lab)
    how = f"built in {image.build_seconds:.1f}s" if image.build_seconds else "reused (cached)"
    print(f"image {lab.image.recipe} ({image.recipe_hash}): {how}")
    print(f"  client key: {image.client_key}")
    print(f"  host key:   {image.host_key_line[:60]}...")
    if args.prune:
        for path in prune(image):
            print(f"  removed {path}")
    print(image.base_qcow2, flush=True)
    return 0
