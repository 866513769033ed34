"""Boot-to-command benchmark: `lab boot -- true` against virtme-ng's `vng -e 'echo ...'`.

Both boot the same bzImage with the same QEMU, CPUs and memory, one after the other
(alternating, so drift on the machine hits both alike), and the whole command is timed
end to end: QEMU start, kernel, init, the command, shutdown. The lab's own boot-to-SSH
time (from its status line) is reported beside it. Prints min/median/max per side and
the ratio of medians; writes results/bench-boot.json. A benchmark, not a timed test.

    .venv/bin/python bench/boot.py [--bzimage PATH] [--runs 5] [--init lean|systemd]

virtme-ng is found as $VNG, on PATH, or in $LAB_CACHE/vng-venv (python3 -m venv that,
then pip install virtme-ng; it wants busybox on the host). Without it, the lab alone is
measured and the report says so.

vng's default root is the host's, read-only with overlayfs on top, which needs a kernel
with CONFIG_OVERLAY_FS (the lab config has none). --vng-root DIR (default
$LAB_CACHE/bench-root when it exists; make one with `mmdebstrap --variant=minbase trixie
DIR`) gives vng a scratch root it may write to (`--root DIR --rw`), never the host's;
without one, vng is not measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness import config  # noqa: E402
from harness.paths import cache_root  # noqa: E402
from harness.qemu import accel  # noqa: E402
from harness.qemu.version import qemu_version  # noqa: E402

LAB = REPO / ".venv" / "bin" / "lab"
UP_LINE = re.compile(r"lab VM up in ([\d.]+)s")
# Without udevd on the host, vng runs the command through its console fallback, which
# loses the exit status (255) and the output although the command ran: a file the
# command creates in the scratch root is the proof.
VNG_MARK = "gmemlab-bench-ok"


def find_vng() -> Path | None:
    for candidate in (
        os.environ.get("VNG"),
        shutil.which("vng"),
        str(cache_root() / "vng-venv" / "bin" / "vng"),
    ):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def default_bzimage(lab: config.LabConfig) -> Path:
    from harness.build import build_kernel, prepare_request

    request = prepare_request(lab, lab.defaults.kernel, lab.defaults.config)
    return Path(build_kernel(request).bzimage)


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, str, int]:
    start = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, check=False)
    return time.monotonic() - start, done.stdout + done.stderr, done.returncode


def stats(values: list[float]) -> dict[str, float]:
    return {
        "min": round(min(values), 2),
        "median": round(statistics.median(values), 2),
        "max": round(max(values), 2),
    }


def machine(lab: config.LabConfig, use_kvm: bool) -> dict[str, str]:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    version = ".".join(str(v) for v in qemu_version(lab.vm.qemu))
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory_gib": str(round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)),
        "host_kernel": platform.release(),
        "qemu": version,
        "accel": "kvm" if use_kvm else "tcg",
        "guest": f"-smp {lab.vm.cpus} -m {lab.vm.memory_mib}M",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bzimage", type=Path, help="kernel (default: lab.yaml defaults' build)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--init", choices=["lean", "systemd"], default=None)
    parser.add_argument("--no-vng", action="store_true", help="measure the lab alone")
    parser.add_argument("--vng-root", type=Path, help="a scratch root for vng (--root --rw)")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench-boot.json")
    args = parser.parse_args()

    lab = config.load()
    bzimage = args.bzimage or default_bzimage(lab)
    probe = accel.cached_probe(lab.vm.qemu, bzimage)
    use_kvm = lab.vm.accel != "tcg" and probe.kvm_works
    vng = None if args.no_vng else find_vng()
    vng_root = args.vng_root or cache_root() / "bench-root"
    if vng is not None and not vng_root.is_dir():
        print(f"vng: no scratch root at {vng_root} (see --vng-root); measuring the lab alone")
        vng = None
    lab_argv = [str(LAB), "boot", "--bzimage", str(bzimage)]
    if args.init:
        lab_argv += ["--init", args.init]
    lab_argv += ["--", "true"]
    vng_argv = [
        str(vng), "-r", str(bzimage), "-p", str(lab.vm.cpus), "-m", f"{lab.vm.memory_mib}M",
        *([] if use_kvm else ["--disable-kvm"]),
        "--root", str(vng_root), "--rw",
        "-e", f"touch /{VNG_MARK}",
    ]  # fmt: skip
    mark = vng_root / VNG_MARK

    def vng_ran() -> bool:
        ran = mark.exists()
        mark.unlink(missing_ok=True)
        return ran

    vng_env = None
    if vng is not None:
        # vng starts its helpers (virtme-run) from its own venv.
        vng_env = {**os.environ, "PATH": f"{vng.parent}:{os.environ.get('PATH', '')}"}

    # One untimed lab run builds or reuses the image and warms the page cache.
    _, out, code = timed(lab_argv)
    if code != 0:
        print(f"lab boot failed (exit {code}):\n{out[-3000:]}", file=sys.stderr)
        return 2
    if vng is not None:
        _, vout, vcode = timed(vng_argv, vng_env)
        if not vng_ran():
            print(f"vng does not work here (exit {vcode}); measuring the lab alone:")
            print("\n".join(vout.strip().splitlines()[-8:]))
            vng = None

    lab_total: list[float] = []
    lab_ssh: list[float] = []
    vng_total: list[float] = []
    for run in range(args.runs):
        seconds, out, code = timed(lab_argv)
        up = UP_LINE.search(out)
        if code != 0 or up is None:
            print(f"lab run {run + 1} failed (exit {code}):\n{out[-2000:]}", file=sys.stderr)
            return 2
        lab_total.append(seconds)
        lab_ssh.append(float(up[1]))
        line = f"run {run + 1}: lab {seconds:5.2f}s (SSH up at {float(up[1]):.2f}s)"
        if vng is not None:
            vseconds, vout, vcode = timed(vng_argv, vng_env)
            if not vng_ran():
                print(f"vng run {run + 1} failed (exit {vcode}):\n{vout[-2000:]}", file=sys.stderr)
                return 2
            vng_total.append(vseconds)
            line += f"   vng {vseconds:5.2f}s"
        print(line, flush=True)

    result: dict[str, object] = {
        "machine": machine(lab, use_kvm),
        "bzimage": str(bzimage),
        "init": args.init or lab.vm.init,
        "vng_argv": vng_argv if vng is not None else None,
        "runs": args.runs,
        "lab_boot_true_s": stats(lab_total),
        "lab_boot_to_ssh_s": stats(lab_ssh),
    }
    print(f"machine: {result['machine']}")
    print(f"lab  `lab boot -- true`: {stats(lab_total)}  (boot to SSH: {stats(lab_ssh)})")
    if vng_total:
        ratio = statistics.median(lab_total) / statistics.median(vng_total)
        result["vng_e_true_s"] = stats(vng_total)
        result["ratio_lab_over_vng"] = round(ratio, 2)
        print(f"vng  `vng -e true`:      {stats(vng_total)}")
        print(f"ratio of medians lab/vng: {ratio:.2f}")
    else:
        result["vng_e_true_s"] = None
        print("vng: not measured (not installed or not working here)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
