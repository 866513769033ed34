"""report.html / report.md: verdict first, failures quoted, no external assets."""

from __future__ import annotations

import re
from pathlib import Path

from harness import report
from harness.results import Outcome, Recorder, TestResult


def make_run(tmp_path: Path, complete: bool) -> Recorder:
    rec = Recorder(tmp_path, "mainline-lab-qemu", run_id="r1")
    rec.environment(kernel_commit="abc123", accelerator="tcg", nested="yes")
    with rec.stage("boot"):
        pass
    rec.add(TestResult("kselftests", "guest_memfd_test", Outcome.PASS, seconds=2.0))
    rec.add(
        TestResult(
            "kselftests",
            "dmesg",
            Outcome.FAIL,
            reason="new kernel warnings during the suite",
            excerpt="WARNING: CPU: 1 PID: 7 at virt/kvm/guest_memfd.c:99 <script>",
        )
    )
    rec.add(TestResult("gmem-ioctl", "a|b", Outcome.SKIP, reason="no | feature"))
    rec.suite_done("kselftests", seconds=12.5)
    rec.finish(complete=complete, reason="the VM died during kselftests")
    return rec


def test_html_and_md(tmp_path: Path) -> None:
    rec = make_run(tmp_path, complete=True)
    html, md = report.render(rec.record, rec.root)
    text = html.read_text()
    # Verdict before the failures, failures before the tables.
    assert text.index("FAIL") < text.index("Failures") < text.index("Suites")
    assert "&lt;script&gt;" in text and "<script>" not in text
    assert not re.search(r"(src|href)=\"https?://", text)
    assert "<link" not in text
    mdt = md.read_text()
    assert mdt.startswith("# gmemlab run r1: FAIL")
    assert "WARNING: CPU: 1" in mdt and "a\\|b" in mdt
    assert "Incomplete" not in mdt


def test_incomplete_is_said(tmp_path: Path) -> None:
    rec = make_run(tmp_path, complete=False)
    _, md = report.render(rec.record, rec.root)
    assert "Incomplete run:** the VM died during kselftests" in md.read_text()
