"""report.html / report.md: verdict first, failures quoted, no external assets."""

from __future__ import annotations

import re
from pathlib import Path

from markupsafe import Markup

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
    assert "WARNING: CPU: 1" in mdt and "| 1 | gmem-ioctl | no \\| feature |" in mdt
    assert "- `a|b`" in mdt
    assert "Incomplete" not in mdt


def test_incomplete_is_said(tmp_path: Path) -> None:
    rec = make_run(tmp_path, complete=False)
    _, md = report.render(rec.record, rec.root)
    assert "Incomplete run:** the VM died during kselftests" in md.read_text()


PROBE = {
    "guest probe: kernel": "7.3.4",
    "guest probe: attrs2_gmem": "false",
    "guest probe: attrs2_gmem_errno": "ENOTTY",
    "guest probe: attrs2_vm": "false",
    "guest probe: guest_memfd": "true",
    "guest probe: gmem_flags": '{"default": 3, "sw_protected": 1}',
    "guest probe: content_modes": "{}",
    "guest probe: probe_errors": "[]",
}


def test_skips_are_grouped_by_reason_biggest_first(tmp_path: Path) -> None:
    rec = Recorder(tmp_path, "c", run_id="r2")
    for i in range(97):
        rec.add(
            TestResult("gmem-ioctl", f"t{i}", Outcome.SKIP, "KVM_SET_MEMORY_ATTRIBUTES2 absent")
        )
    rec.add(TestResult("gmem-ioctl", "u", Outcome.SKIP, "needs GUEST_MEMFD_FLAG_MMAP"))
    rec.add(TestResult("gmem-ioctl", "v", Outcome.FAIL, "boom"))
    rec.add(TestResult("gmem-ioctl", "w", Outcome.PASS))
    rec.suite_done("gmem-ioctl")
    record = rec.finish(complete=True)
    groups = report.skip_groups(record.results)
    assert [(g.reason, len(g.tests)) for g in groups] == [
        ("KVM_SET_MEMORY_ATTRIBUTES2 absent", 97),
        ("needs GUEST_MEMFD_FLAG_MMAP", 1),
    ]
    html, md = report.render(record, rec.root)
    text = md.read_text()
    assert "| 97 | gmem-ioctl | KVM_SET_MEMORY_ATTRIBUTES2 absent |" in text
    # The suite's table holds what ran, not the 98 skips.
    suite_part = text[text.index("## Suites") : text.index("## Environment")]
    assert "| v | fail |" in suite_part and "| w | pass |" in suite_part
    assert "t5" not in suite_part and "98 skipped: see Skipped" in suite_part
    page = html.read_text()
    assert "<summary>97 \u00d7 gmem-ioctl: KVM_SET_MEMORY_ATTRIBUTES2 absent</summary>" in page
    # Failures come before the skips.
    assert page.index("Failures") < page.index("Skipped (98)")


def test_probed_features_are_near_the_top(tmp_path: Path) -> None:
    rec = Recorder(tmp_path, "c", run_id="r3")
    rec.environment(kernel_commit="abc", **PROBE)
    rec.add(TestResult("gmem-ioctl", "t", Outcome.PASS))
    record = rec.finish(complete=True)
    features = report.kernel_features(record.environment)
    assert features is not None and features.series is False
    assert "does not carry the series" in features.headline and "ENOTTY" in features.headline
    names = {f.name: f.value for f in features.rows}
    assert names["guest_memfd"] == "yes"
    assert names["guest_memfd flags (per VM type)"] == '{"default": 3, "sw_protected": 1}'
    assert "content modes accepted" not in names  # empty: not a row
    _, md = report.render(record, rec.root)
    text = md.read_text()
    assert text.index("Kernel: 7.3.4 does not carry the series") < text.index("## Failures")
    # The probe keys leave the environment table for the feature section.
    env = text[text.index("## Environment") :]
    assert "guest probe" not in env and "kernel_commit" in env


def test_series_kernel_is_said_to_carry_it() -> None:
    env = {**PROBE, "guest probe: attrs2_gmem": "true", "guest probe: attrs2_gmem_errno": "0"}
    features = report.kernel_features(env)
    assert features is not None and features.series is True
    assert "carries the series" in features.headline
    assert report.kernel_features({"kernel": "x"}) is None


def test_a_lead_is_the_first_section(tmp_path: Path) -> None:
    rec = make_run(tmp_path, complete=True)
    lead = report.Lead(
        "## Comparison: base → series\n\n**Regressed.** 1 regression\n",
        Markup("<section class=comparison><h2>Comparison</h2></section>"),
        headline="A/B against mainline: 1 regression",
        regressed=True,
    )
    html, md = report.render(rec.record, rec.root, lead)
    text = md.read_text()
    first = text[text.index("\n## ") :].splitlines()[1]
    assert first == "## Comparison: base → series"
    assert "**A/B against mainline: 1 regression**" in text.split("## ")[0]
    page = html.read_text()
    assert page.index("<h2>Comparison</h2>") < page.index("<h2>Failures</h2>")
    assert 'class="headline regressed"' in page
