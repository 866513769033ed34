"""A stand-in for the `lab` CLI as LabRunner calls it (`build` and `run`), for unit tests.

What it does is read from the tree's MODE file: ok, broken (a link error), machine (a
full disk), boot-crash, no-boot, hang. `run` writes a real summary.json with the lab's
own Recorder, so LabRunner is tested against the format lab run really writes.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from harness.results import Outcome, Recorder, TestResult


def build(tree: Path) -> int:
    mode = (tree / "MODE").read_text().strip()
    print("build dev/lab: source")
    log = tree.parent / "make.log"
    if mode == "hang-build":
        time.sleep(60)
    if mode in ("broken", "machine"):
        error = (
            "vmlinux.o: in function `f': ld: undefined reference to `kvm_gmem_nope'"
            if mode == "broken"
            else "cc1: fatal error: error writing to /tmp/ccX.s: No space left on device"
        )
        log.write_text(f"  CC      virt/kvm/guest_memfd.o\n{error}\nmake: *** [Makefile] Error 2\n")
        print(f"lab: build: kernel failed (exit 2); last lines of {log}:", file=sys.stderr)
        print(f"  -> read the full log: {log}", file=sys.stderr)
        return 2
    manifest = tree.parent / "manifest.json"
    manifest.write_text("{}\n")
    print(manifest)
    return 0


def run(manifest: Path, suites: list[str], results: Path, kernel: str) -> int:
    tree = manifest.parent / "tree"
    mode = (tree / "MODE").read_text().strip()
    rec = Recorder(results, f"{kernel}-lab-qemu")
    if mode in ("boot-crash", "no-boot"):
        error = (
            "the kernel crashed while booting: BUG: kernel NULL pointer dereference"
            if mode == "boot-crash"
            else "no SSH banner within 180s"
        )
        rec.record.stages["boot"] = {"status": "failed", "seconds": 3.0, "error": error}
        rec.error(error)
        rec.finish(False, error)
        return 2
    if mode == "timeout-then-hang":
        # A wedged guest: the first suite's test timed out, the next one hangs.
        rec.record.stages["boot"] = {"status": "ok", "seconds": 8.0}
        rec.add(TestResult(suites[0], "t1", Outcome.TIMEOUT, "no result within 120 s"))
        rec.suite_done(suites[0])
        suites, mode = suites[1:], "hang"
    if mode == "hang":

        def on_term(signum: int, frame: FrameType | None) -> None:
            (tree.parent / "got-sigterm").write_text("yes\n")
            rec.finish(False, "interrupted")
            sys.exit(2)

        signal.signal(signal.SIGTERM, on_term)
        time.sleep(60)
    rec.record.stages["boot"] = {"status": "ok", "seconds": 8.0}
    for s in suites:
        outcome = Outcome.FAIL if (tree / f"FAIL-{s}").exists() else Outcome.PASS
        rec.add(TestResult(s, "t1", outcome, "assert 0 == 22" if outcome is Outcome.FAIL else ""))
        rec.suite_done(s)
    rec.finish(True)
    return 1 if any(r.outcome is Outcome.FAIL for r in rec.record.results) else 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lab")
    sub = parser.add_subparsers(dest="command")
    b = sub.add_parser("build")
    b.add_argument("--kernel", type=Path)
    b.add_argument("--config")
    r = sub.add_parser("run")
    r.add_argument("--kernel")
    r.add_argument("--manifest", type=Path)
    r.add_argument("--suites")
    r.add_argument("--results", type=Path)
    r.add_argument("--suite-timeout", type=int)
    args = parser.parse_args()
    if args.command == "build":
        return build(args.kernel)
    if args.suite_timeout is not None:  # what the runner passed on, for the test to see
        args.results.mkdir(parents=True, exist_ok=True)
        (args.results / "suite-timeout.txt").write_text(f"{args.suite_timeout}\n")
    return run(args.manifest, args.suites.split(","), args.results, args.kernel)


if __name__ == "__main__":
    sys.exit(main())
