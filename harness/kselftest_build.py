"""Build the KVM selftests the lab runs, statically, against the build's own headers.

Only the tests lab.yaml's suites run are built (`wanted`, not all ~100), each with its own
status: "built", "absent" (this tree does not have it, e.g. guest_memfd_conversions_test
on mainline), or "failed" (with a log excerpt). Binaries must be static x86-64 ELF so they run in
any guest image; anything else counts as failed, never as built.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.config import LabConfig
from harness.proc import run_logged

# The series' driver for private_mem_conversions_test, when the tree ships one, and the
# selftest binary it runs. The one definition: the conversions-driver suite imports them.
DRIVERS = ("x86/private_mem_conversions_test.py", "x86/private_mem_conversions_test.sh")
DRIVER_BINARY = "x86/private_mem_conversions_test"
EM_X86_64 = 62
PT_INTERP = 3


@dataclass(frozen=True)
class SelftestBuild:
    out_dir: Path
    status: dict[str, str]
    errors: dict[str, str]
    driver: str | None


def wanted(lab: LabConfig) -> tuple[str, ...]:
    """The selftests to build, from lab.yaml alone: every kselftest suite's `tests:` and,
    when a conversions-driver suite exists, the binary the driver runs (each name once,
    in lab.yaml's order)."""
    names: dict[str, None] = {}
    for spec in lab.suites.values():
        if spec.kind == "kselftest":
            names.update(dict.fromkeys(spec.tests))
        elif spec.kind == "conversions-driver":
            names[DRIVER_BINARY] = None
    return tuple(names)


def selftest_dir(src: Path) -> Path:
    return src / "tools" / "testing" / "selftests" / "kvm"


def tree_name(kdir: Path, name: str) -> str:
    """Trees before 6.14 keep x86 tests in x86_64/; the lab names them x86/ always."""
    if name.startswith("x86/") and not (kdir / "x86").is_dir() and (kdir / "x86_64").is_dir():
        return "x86_64/" + name.removeprefix("x86/")
    return name


def locate(kdir: Path, name: str) -> str | None:
    """Where the tree has the lab's selftest `name` (its path under kdir), or None.

    One place is tried today. Later revisions of the series move
    guest_memfd_conversions_test to x86/: a lookup across locations (name, then
    x86/name) goes here and nowhere else. The lab's name stays the key everywhere
    (statuses, manifest, payload), since the binary is copied under that name.
    """
    tname = tree_name(kdir, name)
    return tname if listed(kdir, tname) else None


def listed(kdir: Path, name: str) -> bool:
    """The tree has the test: its source exists and the Makefile builds it for x86."""
    makefile = kdir / "Makefile.kvm"
    if not makefile.is_file():
        makefile = kdir / "Makefile"
    if not makefile.is_file() or not (kdir / f"{name}.c").is_file():
        return False
    pattern = rf"^TEST_GEN_PROGS_(x86|x86_64|COMMON)\s*\+=\s*{re.escape(name)}\s*$"
    return re.search(pattern, makefile.read_text(), re.MULTILINE) is not None


def selftest_make(kdir: Path, obj: Path, jobs: str) -> list[str]:
    hdr = obj / "usr"
    return [
        "make",
        "-C",
        str(kdir),
        f"OUTPUT={obj / 'kselftest' / 'kvm'}",
        f"-j{jobs}",
        "CC=ccache gcc",
        # The build's own uapi headers, never a stale usr/include inside the source tree.
        f"KHDR_INCLUDES=-isystem {hdr / 'include'}",
        f"INSTALL_HDR_PATH={hdr}",
        # Overrides Makefile.kvm's LDFLAGS (-pthread -no-pie): static needs neither PIE
        # nor a dynamic libpthread, and runs in any guest image.
        "LDFLAGS=-static -pthread",
    ]


def build(
    src: Path,
    obj: Path,
    out_dir: Path,
    log: Path,
    env: Mapping[str, str],
    jobs: str,
    tests: Sequence[str],
) -> SelftestBuild:
    """Build `tests` (lab names, e.g. from `wanted`) and copy the tree's driver."""
    kdir = selftest_dir(src)
    status: dict[str, str] = {}
    errors: dict[str, str] = {}
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    present = {n: where for n in tests if (where := locate(kdir, n)) is not None}
    for name in tests:
        if name not in present:
            status[name] = "absent"
    output = obj / "kselftest" / "kvm"
    make = selftest_make(kdir, obj, jobs)
    if present:
        targets = [str(output / t) for t in present.values()]
        done = run_logged(
            [*make, "-k", *targets],
            log=log,
            label="build: selftests",
            env=env,
            check=False,
        )
        for name, tname in present.items():
            binary = output / tname
            if done.returncode != 0:
                # Which one failed? Rebuild it alone, so its excerpt is its own.
                ok, excerpt = _build_one(make, binary, log, env)
                if not ok:
                    status[name], errors[name] = "failed", excerpt
                    continue
            problem = static_x86_64_problem(binary)
            if problem:
                status[name], errors[name] = "failed", problem
                continue
            dest = out_dir / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(binary, dest)
            status[name] = "built"
    driver = _copy_driver(kdir, out_dir)
    return SelftestBuild(out_dir, {n: status[n] for n in tests}, errors, driver)


def _build_one(
    make: list[str], binary: Path, log: Path, env: Mapping[str, str]
) -> tuple[bool, str]:
    one = [a for a in make if not a.startswith("-j")]
    done = subprocess.run(
        [*one, str(binary)], env=dict(env), capture_output=True, text=True, check=False
    )
    with log.open("a") as sink:
        sink.write(f"$ {' '.join(one)} {binary}\n{done.stdout}{done.stderr}")
    if done.returncode == 0 and binary.is_file():
        return True, ""
    lines = (done.stdout + done.stderr).splitlines()
    interesting = [ln for ln in lines if "error" in ln.lower()] or lines
    return False, "\n".join(interesting[-12:])


def static_x86_64_problem(path: Path) -> str | None:
    """None if path is a statically linked x86-64 ELF, else what is wrong with it."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return f"{path.name} was not produced"
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return f"{path.name} is not a 64-bit ELF file"
    (machine,) = struct.unpack_from("<H", data, 18)
    if machine != EM_X86_64:
        return f"{path.name} is for ELF machine {machine}, not x86-64"
    (phoff,) = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    for i in range(phnum):
        (p_type,) = struct.unpack_from("<I", data, phoff + i * phentsize)
        if p_type == PT_INTERP:
            return f"{path.name} is dynamically linked (has an ELF interpreter)"
    return None


def _copy_driver(kdir: Path, out_dir: Path) -> str | None:
    for rel in DRIVERS:
        found = kdir / tree_name(kdir, rel)
        if found.is_file():
            dest = out_dir / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(found, dest)
            dest.chmod(0o755)
            return rel
    return None
