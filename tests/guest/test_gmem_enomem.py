"""A guest_memfd folio allocation that fails under a vCPU fault is reported, not dereferenced.

Pins (Linux 7.3): kvm_gmem_get_folio() -> __filemap_get_folio_mpol() -> filemap_add_folio()
charges the new folio to the faulting task's memory cgroup (mem_cgroup_charge with the
mapping's GFP_HIGHUSER). __kvm_gmem_get_pfn() returns that ERR_PTR, kvm_gmem_get_pfn()
returns its errno, and kvm_mmu_faultin_pfn_gmem() (arch/x86/kvm/mmu/mmu.c) fills in a
KVM_EXIT_MEMORY_FAULT (gpa of the faulting page, size PAGE_SIZE, flags 0 for a shared
gfn) and fails KVM_RUN with -ENOMEM. Mutant e9efb13bdb8b (`if (IS_ERR(folio))` ->
`if (0==1)` in __kvm_gmem_get_pfn) dereferences the ERR_PTR as a folio: an oops.

Why the charge fails instead of OOM-killing or looping (mm/memcontrol.c, mm/oom_kill.c):
try_charge_memcg() over memory.max reclaims (guest_memfd folios are unevictable and the
cgroup gets no swap), retries, then mem_cgroup_oom() -> out_of_memory(). Every task in
the cgroup has oom_score_adj -1000, so oom_badness() is LONG_MIN for all of them,
select_bad_process() chooses nothing and out_of_memory() returns false ("no killable
processes"; only a global OOM panics there). The charge then fails with -ENOMEM because
GFP_HIGHUSER has neither __GFP_NOFAIL nor __GFP_HIGH.

Needs CONFIG_MEMCG (the cgroup v2 memory controller); skips cleanly without it.
"""

import contextlib
import errno
import fcntl
import gc
import os
import select
import signal
import time
from collections.abc import Iterator

import pytest
from gmemsuite import kernel_config, require_gmem_flags, require_vcpus
from kvm import api, child, uapi
from kvm.guest import CODE_GPA, DATA_GPA, SCAN_OFFSET, STACK_TOP, MiniGuest
from kvm.probe import Features

PAGE = uapi.PAGE_SIZE
CGROUP_ROOT = "/sys/fs/cgroup"
# Room left under memory.max for what runs between setting the limit and KVM_RUN
# (a few ctypes objects); the guest scan is far larger, so it hits the limit.
MARGIN = 2 << 20
GMEM_SIZE = 16 << 20
CHILD_TIMEOUT = 150.0


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _require_memory_cgroup() -> None:
    """Skip unless a cgroup v2 memory controller can be enabled under CGROUP_ROOT."""
    controllers = os.path.join(CGROUP_ROOT, "cgroup.controllers")
    if not os.path.exists(controllers):
        pytest.skip(f"no cgroup v2 hierarchy at {CGROUP_ROOT} (cgroup v1 or not mounted)")
    if "memory" not in _read(controllers).split():
        why = f"no cgroup v2 memory controller ({controllers} lacks 'memory'"
        if kernel_config("MEMCG") == "n":
            why += "; CONFIG_MEMCG is not set in this kernel"
        pytest.skip(why + ")")
    if os.geteuid() != 0:
        pytest.skip("needs root: creates a cgroup and sets oom_score_adj -1000")


@contextlib.contextmanager
def _memory_cgroup() -> Iterator[str]:
    """A fresh child of CGROUP_ROOT with the memory controller; removed afterwards."""
    subtree = os.path.join(CGROUP_ROOT, "cgroup.subtree_control")
    if "memory" not in _read(subtree).split():
        _write(subtree, "+memory")  # the root cgroup may enable controllers with tasks in it
    path = os.path.join(CGROUP_ROOT, f"gmemlab-enomem-{os.getpid()}")
    os.mkdir(path)
    try:
        yield path
    finally:
        _rmdir_when_empty(path)


def _rmdir_when_empty(path: str) -> None:
    # The child is reaped before we get here; a task that just exited can keep the
    # cgroup populated for a moment, so EBUSY is retried briefly.
    for _ in range(50):
        try:
            os.rmdir(path)
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            time.sleep(0.1)
    procs = _read(os.path.join(path, "cgroup.procs")).split()
    raise AssertionError(
        f"cannot remove cgroup {path}: still holds tasks {procs}; rmdir it by hand"
    )


def _kvm_run_errno(fd: int) -> int:
    """One KVM_RUN; its errno or 0. Kept tiny: it runs with the cgroup at its limit."""
    try:
        fcntl.ioctl(fd, uapi.KVM_RUN, 0)
    except OSError as exc:
        return exc.errno or -1
    return 0


def _events(cgroup: str) -> dict[str, int]:
    lines = _read(os.path.join(cgroup, "memory.events")).split("\n")
    return {k: int(v) for k, v in (line.split() for line in lines if line.strip())}


def _guest_in_limited_cgroup(cgroup: str, limit_hit_w: int, lifted_r: int) -> None:
    """Child body: join the cgroup, fault fresh guest_memfd pages until a charge fails."""
    gc.disable()  # no collection may touch (and COW-charge) pages while at the limit
    _write("/proc/self/oom_score_adj", "-1000")
    _write(os.path.join(cgroup, "cgroup.procs"), str(os.getpid()))
    # Reclaim must not swap our anonymous pages out: faulting them back in at the
    # limit would loop in the user page-fault path.
    swap_max = os.path.join(cgroup, "memory.swap.max")
    if os.path.exists(swap_max):
        _write(swap_max, "0")
    # The VM is created inside the cgroup, so all its charges (and the vCPU's) land there.
    vm = api.Vm()
    guest = MiniGuest(vm)
    flags = uapi.GUEST_MEMFD_FLAG_MMAP | uapi.GUEST_MEMFD_FLAG_INIT_SHARED
    fd = vm.create_guest_memfd(GMEM_SIZE, flags)
    vm.set_region(1, DATA_GPA, GMEM_SIZE, guest_memfd=fd)
    # Warm-up: the first data page maps the code, stack and page-table pages and tops up
    # the MMU caches (to 40 objects), so later faults allocate nothing but the
    # guest_memfd folio; the failing path below also runs once (ENOTTY on /dev/null).
    guest.check_and_fill(DATA_GPA, PAGE, 0, 0)
    devnull = os.open(os.devnull, os.O_RDONLY)
    assert _kvm_run_errno(devnull) == errno.ENOTTY
    os.close(devnull)
    scan = uapi.KvmRegs(
        rip=CODE_GPA + SCAN_OFFSET,
        rdi=DATA_GPA + PAGE,
        rcx=GMEM_SIZE - PAGE,  # repe scasb reads every fresh (zero) page in one KVM_RUN
        rax=0,
        rdx=0,
        rsp=STACK_TOP,
        rflags=0x2,
    )
    guest.vcpu.settle()
    usage = int(_read(os.path.join(cgroup, "memory.current")))
    _write(os.path.join(cgroup, "memory.max"), str(usage + MARGIN))
    guest.vcpu.set_regs(scan)
    err = _kvm_run_errno(guest.vcpu.fd)
    os.write(limit_hit_w, b"!")  # the parent lifts the limit; nothing here may allocate
    os.read(lifted_r, 1)

    exit_ = guest.vcpu._decode()  # Vcpu.run() would raise on ENOMEM; decode kvm_run as is
    assert err == errno.ENOMEM, (
        f"KVM_RUN past memory.max returned errno {err} ({os.strerror(err) if err else 'ok'}), "
        f"expected ENOMEM from the failed guest_memfd folio charge; {exit_.describe()}"
    )
    assert exit_.reason == uapi.KVM_EXIT_MEMORY_FAULT, (
        f"ENOMEM without a memory-fault exit ({exit_.describe()}): the failure did not "
        "come from kvm_gmem_get_pfn()"
    )
    assert DATA_GPA + PAGE <= exit_.fault_gpa < DATA_GPA + GMEM_SIZE, exit_.describe()
    assert exit_.fault_gpa % PAGE == 0 and exit_.fault_size == PAGE, exit_.describe()
    assert exit_.fault_flags == 0, f"shared gfn reported as private: {exit_.describe()}"
    # With the limit lifted the same page faults in: the failure left nothing behind
    # (no folio stuck locked in the page cache, no stale mapping).
    assert guest.read(exit_.fault_gpa) == 0, "the page whose charge failed is not zero"
    guest.close()
    vm.close()


def _reap_quietly(spawned: child.Spawned) -> None:
    """Kill and reap a child the test stopped waiting for, without blocking on it.

    A child stuck in the kernel (the mutant's oops can leave it holding locks) cannot
    be reaped; the test has already failed then, so it is left behind, not waited on.
    """
    try:
        if spawned.poll() is not None:
            return
        os.kill(spawned.pid, signal.SIGKILL)
        for _ in range(50):
            if os.waitpid(spawned.pid, os.WNOHANG)[0]:
                return
            time.sleep(0.1)
    except ChildProcessError:
        pass  # already reaped by Spawned.wait() on its deadline


@pytest.mark.timeout(2 * CHILD_TIMEOUT)
def test_gmem_folio_charge_failure_is_reported(features: Features) -> None:
    """A vCPU fault whose guest_memfd folio charge fails: KVM_RUN ENOMEM + MEMORY_FAULT exit."""
    require_vcpus(features)
    flags = uapi.GUEST_MEMFD_FLAG_MMAP | uapi.GUEST_MEMFD_FLAG_INIT_SHARED
    require_gmem_flags(features, uapi.KVM_X86_DEFAULT_VM, flags)
    _require_memory_cgroup()
    events: dict[str, int] = {}
    result: child.ChildResult | None = None
    with _memory_cgroup() as cgroup:
        hit_r, hit_w = os.pipe()
        lift_r, lift_w = os.pipe()
        spawned = child.spawn(lambda: _guest_in_limited_cgroup(cgroup, hit_w, lift_r))
        os.close(hit_w)
        os.close(lift_r)
        deadline = time.monotonic() + CHILD_TIMEOUT
        try:
            # EOF instead of "!" means the child died first (the mutant's oops kills it).
            ready, _, _ = select.select([hit_r], [], [], CHILD_TIMEOUT)
            if ready and os.read(hit_r, 1) == b"!":
                events = _events(cgroup)
                _write(os.path.join(cgroup, "memory.max"), "max")
                os.write(lift_w, b"go")
            result = spawned.wait(max(1.0, deadline - time.monotonic()))
        finally:
            os.close(hit_r)
            os.close(lift_w)
            if result is None:
                _reap_quietly(spawned)
    assert result.exit_code == 0, f"guest at its memory cgroup limit: child {result.describe()}"
    assert events.get("oom", 0) >= 1, f"the charge never reached the memcg OOM path: {events}"
    assert events.get("oom_kill", 0) == 0, f"the memcg OOM killer killed a task: {events}"
