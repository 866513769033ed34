"""The guest's nested KVM facts, from the lean init's console line or the probe."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.qemu import nested

NESTED_LINE = (
    'gmemlab-nested: {"cpu": "AMD EPYC", "created": [0, 1], "error": "", '
    '"kvm_amd_nested": "1", "present": true, "virt_flag": "svm", "vm_types": [0, 1]}'
)


def test_nested_line_on_the_console_is_parsed() -> None:
    text = f"[    5.6] EXT4-fs (vda): re-mounted.\ngmemlab login: {NESTED_LINE}\n"
    found = nested.nested_from_console(text)
    assert found is not None
    assert found.ok and found.present
    assert found.vm_types == (0, 1) and found.created == (0, 1)
    assert found.guest_cpu == "AMD EPYC"
    assert "kvm_amd_nested=1" in found.detail and "guest CPU flag svm" in found.detail


def test_no_nested_line_yet() -> None:
    assert nested.nested_from_console("[ 1.0] Linux version 7.3\n") is None


def test_guest_without_kvm_is_not_nested() -> None:
    found = nested.parse_nested(
        '{"present": false, "vm_types": [], "created": [], "error": "No such file"}'
    )
    assert not found.ok
    assert "/dev/kvm absent" in found.detail and "No such file" in found.detail


def test_garbage_from_the_probe_is_not_nested() -> None:
    found = nested.parse_nested("Traceback (most recent call last):")
    assert not found.ok
    assert "Traceback" in found.detail


def test_nested_line_from_a_real_lean_boot() -> None:
    golden = Path(__file__).parent / "golden" / "console" / "lab-7.3-clean-boot-lean.log"
    found = nested.nested_from_console(golden.read_text())
    assert found is not None and found.ok
    assert found.created == (0, 1)  # KVM_X86_DEFAULT_VM and KVM_X86_SW_PROTECTED_VM


def test_only_the_lean_init_is_waited_for_on_the_console() -> None:
    assert nested.console_wait_s("lean") == nested.NESTED_CONSOLE_WAIT_S
    assert nested.console_wait_s("systemd") == 0


@pytest.mark.parametrize(
    "line",
    [
        '{"present": true, "vm_types": ["x"], "created": [0]}',  # issue 15's line
        '{"present": true, "vm_types": [0], "created": "0,1"}',
        '{"present": true, "vm_types": [0.5], "created": [null]}',
        '{"present": true, "vm_types": 7}',
        "[1, 2, 3]",
        '"present"',
        "null",
        '{"present": true, "vm_types": [0, 1',  # cut off mid-line
        '{"present": true, "vm_types": [' + "9" * 5000 + "]}",
    ],
)
def test_malformed_nested_line_does_not_abort_the_boot(line: str) -> None:
    """A guest printing a malformed probe line: no nested KVM, the text quoted, no
    exception (the boot went on)."""
    found = nested.nested_from_console(f"[ 1.0] x\n{nested.NESTED_MARK}{line}\n")
    assert found is not None and not found.ok
    assert found.detail.startswith("the probe printed") or "present" in found.detail
    assert len(found.detail) <= 500
