"""Which accelerator QEMU really gets: KVM where it runs a guest, else TCG.

/dev/kvm existing proves nothing: on some CI hosts it is a paravirtual KVM that runs
real-mode code (a boot sector passes) but stops with "KVM internal error ... emulation
failure" as soon as a kernel decompresses itself in long mode. So the probe boots the
kernel the lab is about to boot, without a root file system, under `-accel kvm`: only
the kernel's own "VFS: Unable to mount root fs" panic (it ran its whole init) counts as
"KVM works". The answer is cached per QEMU binary and host kernel, since neither
changes between boots.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness import arch
from harness.errors import InfraError
from harness.paths import cache_dir
from harness.proc import kill_group
from harness.qemu.version import qemu_missing, qemu_version

PROBE_TIMEOUT_S = 30.0
# The kernel got through its whole init and only lacked a root file system.
PROBE_SUCCESS = re.compile(r"VFS: Unable to mount root fs|Kernel panic - not syncing")
PROBE_FAILURE = re.compile(r"KVM internal error[^\n]*|emulation failure|Failed to \S+ KVM[^\n]*")
# QEMU 7.2's multi-threaded TCG oopsed guests (2 of 10 boots); 8+ did not.
MTTCG_MIN_VERSION = (8, 0)


@dataclass(frozen=True)
class Probe:
    kvm_works: bool
    reason: str
    qemu_version: tuple[int, int, int]


@dataclass(frozen=True)
class Accel:
    name: str  # "kvm" | "tcg"
    cpu_model: str
    argv: tuple[str, ...]
    reason: str


def probe_kvm(qemu: str, kernel: Path) -> Probe:
    """Boot kernel (no root) under KVM; kvm_works only if its init really ran."""
    version = qemu_version(qemu)
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return Probe(False, "/dev/kvm is missing or not accessible", version)
    with tempfile.TemporaryDirectory(prefix="gmemlab-kvm-probe-") as tmp:
        console, errors = Path(tmp) / "console.log", Path(tmp) / "stderr.log"
        argv = [
            qemu, "-accel", "kvm", "-cpu", arch.HOST.kvm_cpu, "-m", "512", "-smp", "1",
            "-nodefaults", "-display", "none", "-no-reboot",
            "-serial", f"file:{console}", "-kernel", str(kernel),
            "-append", f"console={arch.HOST.console} panic=-1 root=/dev/gmemlab-kvm-probe",
        ]  # fmt: skip
        with errors.open("wb") as err:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True
            )
        try:
            verdict = _watch_probe(proc, console, errors)
        finally:
            # A failed KVM guest pauses instead of exiting: always end it here.
            if proc.poll() is None:
                kill_group(proc)
    return Probe(verdict[0], verdict[1], version)


def _watch_probe(proc: subprocess.Popen[bytes], console: Path, errors: Path) -> tuple[bool, str]:
    deadline = time.monotonic() + PROBE_TIMEOUT_S
    while time.monotonic() < deadline:
        exited = proc.poll() is not None
        if console.exists() and PROBE_SUCCESS.search(console.read_text(errors="replace")):
            return True, "a kernel ran its init under KVM"
        err = errors.read_text(errors="replace")
        failure = PROBE_FAILURE.search(err)
        if failure or exited:
            lines = [ln.strip() for ln in err.splitlines() if ln.strip()]
            detail = failure[0] if failure else (lines[0] if lines else "no output")
            return False, f"KVM probe failed: {detail[:120]} (QEMU exit {proc.poll()})"
        time.sleep(0.1)
    return False, f"a kernel under KVM did not finish booting in {PROBE_TIMEOUT_S:.0f}s"


def _probe_key(qemu: str) -> str:
    path = Path(qemu) if "/" in qemu else Path(_which(qemu))
    st = path.stat()
    ident = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}:{os.uname().release}"
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


def _which(qemu: str) -> str:
    from shutil import which

    found = which(qemu)
    if found is None:
        raise qemu_missing(qemu)
    return found


def cached_probe(qemu: str, kernel: Path, cache: Path | None = None) -> Probe:
    """probe_kvm, remembered per QEMU binary and host kernel."""
    path = (cache or cache_dir("accel")) / f"{_probe_key(qemu)}.json"
    try:
        data = json.loads(path.read_text())
        return Probe(data["kvm_works"], data["reason"], tuple(data["qemu_version"]))
    except (FileNotFoundError, KeyError, ValueError, TypeError):
        pass
    probe = probe_kvm(qemu, kernel)
    path.write_text(json.dumps(probe.__dict__) + "\n")
    return probe


def host_virt_flag(cpuinfo: str) -> str | None:
    """The host CPU's virtualisation flag ('vmx' or 'svm') when it has one, so KVM can
    pass it on."""
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    for flag in arch.HOST.virt_flags:
        if flag in flags:
            return flag
    return None


def _read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def choose(
    wanted: str,
    probe: Callable[[], Probe],
    cpuinfo: Callable[[], str] = _read_cpuinfo,
) -> Accel:
    """The accelerator for lab.yaml's vm.accel ("auto", "kvm" or "tcg")."""
    result = probe()
    if wanted in ("auto", "kvm") and result.kvm_works:
        flag = host_virt_flag(cpuinfo())
        # -cpu host passes vmx/svm through when the host has them; naming it makes a
        # host without nesting fail loudly instead of booting a guest without /dev/kvm.
        cpu = f"{arch.HOST.kvm_cpu},+{flag}" if flag else arch.HOST.kvm_cpu
        return Accel("kvm", cpu, ("-accel", "kvm", "-cpu", cpu), result.reason)
    if wanted == "kvm":
        raise InfraError(
            f"vm.accel is kvm but KVM does not work here: {result.reason}",
            "set vm.accel to auto or tcg in lab.yaml",
        )
    # TCG's max CPU model offers svm with nested paging: the guest's kvm_amd runs.
    mttcg = result.qemu_version[:2] >= MTTCG_MIN_VERSION
    accel = "tcg" if mttcg else "tcg,thread=single"
    why = "vm.accel is tcg" if wanted == "tcg" else f"KVM unusable: {result.reason}"
    if not mttcg:
        why += "; single-threaded TCG (QEMU < 8 oopses guests with MTTCG)"
    cpu = arch.HOST.tcg_cpu
    return Accel("tcg", cpu, ("-accel", accel, "-cpu", cpu), why)
