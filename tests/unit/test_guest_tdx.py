"""The guest suite's TDX reasons (tests/guest/kvm/tdx.py), on the host probe's fixtures.

The cpuinfo lines are the `@@ cpu` sections of tests/unit/golden/hosts/*.probe (their
sources are in SOURCES.md there), so the guest suite and the lab's host probe are
checked against the same descriptions of a TDX and a non-TDX machine.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.guestmods import load

GOLDEN = Path(__file__).parent / "golden" / "hosts"
TDX_VM = 5


def cpuinfo(name: str) -> str:
    text = (GOLDEN / f"{name}.probe").read_text()
    return text.split("@@ cpu\n", 1)[1].split("@@ ", 1)[0]


def test_a_tdx_host_offering_td_vms_has_no_reason() -> None:
    tdx = load("kvm.tdx")
    assert tdx.why_no_tdx([0, 1, TDX_VM], cpuinfo("tdx-host"), "Y\n") is None
    vendor, flags = tdx.cpu_facts(cpuinfo("tdx-host"))
    assert vendor == "GenuineIntel" and "tdx_host_platform" in flags


@pytest.mark.parametrize(
    ("golden", "param", "says"),
    [
        ("amd-snp-host", None, "not an Intel CPU (vendor AuthenticAMD)"),
        ("intel-no-tdx", "N\n", "no TDX private KeyIDs (CPU flag tdx_host_platform absent)"),
        ("tdx-host", "N\n", "kvm_intel.tdx=N: boot with kvm_intel.tdx=1"),
        ("tdx-host", None, "kvm_intel is not loaded"),
    ],
)
def test_why_a_host_has_no_tdx(golden: str, param: str | None, says: str) -> None:
    tdx = load("kvm.tdx")
    why = tdx.why_no_tdx([0, 1], cpuinfo(golden), param)
    assert why is not None and why.startswith(says), why
    assert why.endswith("(KVM_CAP_VM_TYPES offers default/sw_protected)")


def test_a_vm_without_tdx_says_so() -> None:
    tdx = load("kvm.tdx")
    text = "vendor_id\t: GenuineIntel\nflags\t\t: fpu vmx hypervisor\n"
    assert tdx.why_no_tdx([0], text, None).startswith("a virtual machine without TDX")
