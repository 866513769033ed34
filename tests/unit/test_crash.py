"""Crash patterns against real console logs (tests/unit/golden/console/) and real lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import crash

GOLDEN = Path(__file__).parent / "golden" / "console"


def golden(name: str) -> str:
    return (GOLDEN / name).read_text(errors="replace")


def kinds(text: str) -> list[str]:
    return [c.kind for c in crash.scan(text)]


# Real lines from kernel logs, one per kind, as printk writes them.
REAL_LINES = [
    ("panic", "[    2.882378] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)"),  # noqa: E501
    ("panic", "[   12.1] Kernel panic - not syncing: sysrq triggered crash"),
    ("bug", "[    5.1] BUG: kernel NULL pointer dereference, address: 0000000000000000"),
    ("bug", "[    5.1] kernel BUG at mm/filemap.c:1530!"),
    # Newer kernels put both on one line: the more specific kind wins.
    ("gpf", "[    5.2] Oops: general protection fault, probably for non-canonical address 0xdead: 0000 [#1] PREEMPT SMP NOPTI"),  # noqa: E501
    ("oops", "[    5.2] Oops: 0002 [#1] PREEMPT SMP NOPTI"),
    ("gpf", "[    5.2] general protection fault, probably for non-canonical address 0xdead000000000100: 0000 [#1] SMP"),  # noqa: E501
    ("kasan", "[   33.0] BUG: KASAN: slab-use-after-free in kvm_gmem_release+0x3c/0x120"),
    ("ubsan", "[    9.9] UBSAN: shift-out-of-bounds in arch/x86/kvm/mmu/mmu.c:4242:15"),
    ("soft-lockup", "[   52.0] watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [kvm:123]"),
    ("hung-task", "[  245.7] INFO: task kworker/0:1:12 blocked for more than 120 seconds."),
    ("rcu-stall", "[   60.1] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:"),
    ("rcu-stall", "[   60.1] rcu: INFO: rcu_sched self-detected stall on CPU"),
    ("warning", "[    0.000000] WARNING: CPU: 1 PID: 0 at arch/x86/kernel/smpboot.c:350 topology_sane.isra.0+0x6a/0x70"),  # noqa: E501
    ("warning", "[    9.4] WARNING: gmemlab_oops.c:10 at gmemlab_oops_init+0x27/0xff0 [gmemlab_oops], CPU#1: insmod/124"),  # noqa: E501
    ("warning", "[   10.0] WARNING: possible circular locking dependency detected"),
    ("warning", "[   10.0] WARNING: suspicious RCU usage"),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "line"), REAL_LINES)
def test_each_kind_matches_its_real_line(kind: str, line: str) -> None:
    assert crash.classify(line) == kind


@pytest.mark.parametrize(
    "line",
    [
        "WARNING: apt does not have a stable CLI interface.",
        "[    1.0] ACPI: bus type PCI registered",
        "tests/guest/test_bug.py::test_no_panic PASSED",
        "[  OK  ] Started ssh.service - OpenBSD Secure Shell server.",
        "gmemlab-init: sshd started on eth0",
    ],
)
def test_ordinary_lines_are_not_crashes(line: str) -> None:
    assert crash.classify(line) is None


def test_fatal_kinds_are_the_ones_that_end_a_boot() -> None:
    assert crash.is_fatal("Kernel panic - not syncing: x")
    assert crash.is_fatal("BUG: kernel NULL pointer dereference, address: 0")
    assert not crash.is_fatal("WARNING: CPU: 0 PID: 1 at kernel/x.c:1 f+0x1/0x2")
    assert not crash.is_fatal("BUG: KASAN: use-after-free in f")


def test_debian_warning_then_no_root_panic() -> None:
    text = golden("debian-warning-noroot-panic.log")
    found = crash.scan(text)
    assert [c.kind for c in found] == ["warning", "panic"]
    warn, panic = found
    assert "topology_sane" in warn.line
    assert "Unable to mount root fs" in panic.line
    # The context carries the splat: the lines after the WARNING include its call trace.
    assert any("Call Trace" in line for line in warn.context)
    assert warn.context[0] != warn.line  # lines before it too


def test_report_names_the_first_crash_and_lists_the_rest() -> None:
    text = golden("debian-warning-noroot-panic.log")
    report = crash.report(crash.scan(text))
    first = report.splitlines()[0]
    assert first.startswith("warning at line ")
    assert "WARNING: CPU: 1 PID: 0" in first
    assert "also: panic@" in report
    assert "[    0.000000]" not in first  # timestamps stripped in the summary line


def test_clean_boot_has_no_crash() -> None:
    for name in sorted(GOLDEN.glob("*clean-boot*.log")):
        assert kinds(name.read_text(errors="replace")) == [], name


def test_sysrq_panic_log() -> None:
    for name in sorted(GOLDEN.glob("*sysrq-panic*.log")):
        found = crash.scan(name.read_text(errors="replace"))
        assert "panic" in [c.kind for c in found], name
        panic = next(c for c in found if c.kind == "panic")
        assert "sysrq triggered crash" in panic.line


def test_broken_root_log_is_a_panic() -> None:
    for name in sorted(GOLDEN.glob("*broken-root*.log")):
        found = crash.scan(name.read_text(errors="replace"))
        assert found and found[-1].kind == "panic", name
        assert "root" in found[-1].line.lower() or "VFS" in found[-1].line


def test_carriage_returns_and_truncated_tail() -> None:
    text = "ok\r\nBUG: kernel NULL pointer dereference, address: 0\r\n  RIP: f"
    (found,) = crash.scan(text)
    assert found.line.endswith("address: 0")
    assert found.context[-1] == "  RIP: f"
    assert crash.report([]) == ""


def test_every_golden_kind_is_present() -> None:
    # The glob-driven tests above must never pass vacuously.
    for pattern in ("*clean-boot*", "*sysrq-panic*", "*broken-root*"):
        assert list(GOLDEN.glob(pattern + ".log")), pattern


def test_lab_kernel_sysrq_panic_has_its_call_trace() -> None:
    found = crash.scan(golden("lab-7.3-sysrq-panic.log"))
    assert [c.kind for c in found] == ["panic"]
    assert any("sysrq_handle_crash" in line for line in found[0].context)


def test_lab_kernel_warning_in_the_7x_format() -> None:
    # 7.x prints "WARNING: file:line at func, CPU#n: comm/pid": caught from a real log.
    found = crash.scan(golden("lab-7.3-warning.log"))
    assert [c.kind for c in found] == ["warning"]
    assert "gmemlab_oops.c:10 at gmemlab_oops_init" in found[0].line
    assert not crash.is_fatal(found[0].line)


def test_lab_kernel_oops_keeps_running() -> None:
    # A NULL write from a module: BUG + Oops (both fatal kinds), the guest runs on.
    found = crash.scan(golden("lab-7.3-oops.log"))
    kinds = [c.kind for c in found]
    assert kinds[:2] == ["warning", "bug"]  # the earlier deliberate WARN, then the BUG
    assert "oops" in kinds
    bug = found[1]
    assert "BUG: kernel NULL pointer dereference" in bug.line
    assert any("gmemlab_oops_init" in line for line in bug.context)
    assert crash.is_fatal(bug.line)
