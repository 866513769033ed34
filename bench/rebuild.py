"""Rebuild benchmark: a no-op `lab build` and a rebuild after touching guest_memfd.c.

The developer loop's two figures (issue targets: a no-op rebuild under 30 s with no
compiler run; an edit to virt/kvm/guest_memfd.c rebuilding only what depends on it).
Runs each N times, alternating, and prints min/median/max; writes
results/bench-rebuild.json. Needs one finished build of the kernel and config first
(`lab build --kernel mainline --config lab`). A benchmark, not a timed test.

    .venv/bin/python bench/rebuild.py [--kernel mainline] [--config lab] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness import build, config  # noqa: E402


def timed_build(lab: config.LabConfig, kernel: str, config_name: str) -> tuple[float, int]:
    """Seconds for one build_kernel, and how many objects its make log compiled."""
    start = time.monotonic()
    result = build.build_kernel(build.prepare_request(lab, kernel, config_name))
    seconds = time.monotonic() - start
    compiled = sum(1 for ln in result.log.read_text().splitlines() if ln.startswith("  CC "))
    return seconds, compiled


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", default="mainline")
    parser.add_argument("--config", default="lab")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    lab = config.load()
    first = build.build_kernel(build.prepare_request(lab, args.kernel, args.config))
    tree = Path(json.loads(first.manifest.read_text())["source"]["path"])
    target = tree / "virt" / "kvm" / "guest_memfd.c"
    figures: dict[str, list[tuple[float, int]]] = {"no-op": [], "touch guest_memfd.c": []}
    for _ in range(args.runs):
        figures["no-op"].append(timed_build(lab, args.kernel, args.config))
        target.touch()
        figures["touch guest_memfd.c"].append(timed_build(lab, args.kernel, args.config))
    print(
        f"\nmachine: {platform.node()} ({platform.machine()}), kernel {args.kernel}/{args.config}"
    )
    out: dict[str, object] = {}
    for name, runs in figures.items():
        secs = [s for s, _ in runs]
        print(
            f"  {name:22s} min {min(secs):6.1f}s  median {statistics.median(secs):6.1f}s  "
            f"max {max(secs):6.1f}s  objects compiled {[c for _, c in runs]}"
        )
        out[name] = {"seconds": secs, "compiled": [c for _, c in runs]}
    dest = REPO / "results" / "bench-rebuild.json"
    dest.parent.mkdir(exist_ok=True)
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(f"  written to {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
