"""The dmesg bracket: which lines are new since the snapshot, and what they mean."""

from __future__ import annotations

import pytest

from harness.results import Outcome
from harness.suites.dmesg import dmesg_verdict, new_dmesg_lines

BEFORE = "[    1.000000] Linux version 7.3.0\n[    2.000000] kvm: loaded\n"
WARN = "[   50.100000] WARNING: CPU: 1 PID: 99 at virt/kvm/guest_memfd.c:412 kvm_gmem_x+0x1\n"


def test_new_dmesg_lines_by_timestamp() -> None:
    after = BEFORE + WARN + "[   51.000000] other\n"
    assert new_dmesg_lines(BEFORE, after) == [WARN.rstrip("\n"), "[   51.000000] other"]
    # Without timestamps (printk.time=0) a plain difference is used.
    assert new_dmesg_lines("a\nb\n", "a\nb\nc\n") == ["c"]


@pytest.mark.parametrize(
    ("lines", "outcome"),
    [
        ([WARN], Outcome.FAIL),
        (["[ 9.0] BUG: kernel NULL pointer dereference, address: 8"], Outcome.CRASH),
        (["[ 9.0] UBSAN: shift-out-of-bounds in x.c:1"], Outcome.CRASH),
        (["[ 9.0] kvm: WARNING: this is only a user message"], None),
        ([], None),
    ],
)
def test_dmesg_verdict(lines: list[str], outcome: Outcome | None) -> None:
    verdict = dmesg_verdict(lines)
    assert (verdict.outcome if verdict else None) == outcome
    if verdict:
        assert lines[0].split("] ", 1)[1] in verdict.excerpt
