"""The comparison section, the compare page and the nightly strip: pure renderers."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

from harness import history_report as hr
from harness.compare import compare
from harness.history_query import RunRow
from harness.results import TestResult
from tests.unit.outcomes import C, F, P, S

SVG = "{http://www.w3.org/2000/svg}"


def crafted() -> tuple[list[TestResult], list[TestResult]]:
    a = [
        TestResult("s", "broke", P),
        TestResult("s", "fixed", F, "was broken"),
        TestResult("s", "still", F),
        TestResult("s", "flake", P),
        TestResult("s", "skipped", S, "no x"),
        TestResult("s", "gone", P),
    ]
    b = [
        TestResult("s", "broke", F, "EINVAL | <22>"),
        TestResult("s", "fixed", P),
        TestResult("s", "still", C, "oops"),
        TestResult("s", "flake", F, "random"),
        TestResult("s", "skipped", S, "no y"),
        TestResult("s", "new", P),
    ]
    return a, b


def section_titles(text: str) -> list[str]:
    return re.findall(r"^### (\w[\w -]*) \(", text, flags=re.M)


def test_markdown_section_leads_with_regressions() -> None:
    a, b = crafted()
    c = compare(a, b, None, {("s", "flake"): [P, F, P, P, F, P]})
    md = hr.comparison_md(c, "mainline (base)", "series")
    assert md.startswith("## Comparison: mainline (base) → series\n")
    assert "**Regressed.** 1 regression · 1 fix · 1 pre-existing failure · 1 flaky test" in md
    assert section_titles(md) == [
        "Regressions",
        "Fixes",
        "Pre-existing failures",
        "Flaky",
        "New tests",
        "Gone",
        "Skip changes",
    ]
    assert "| s | broke | pass | fail | EINVAL \\| <22> |" in md
    assert "| s | flake | pass | fail | 4/6 (67%) on B's identity | random |" in md
    assert "| s | skipped | skip | skip | no x → no y |" in md


def test_no_differences_lists_nothing() -> None:
    same = [TestResult("s", "t", P)]
    md = hr.comparison_md(compare(same, same))
    assert "**No regressions.** 1 unchanged" in md and "###" not in md


def test_html_section_is_escaped_and_folds_bookkeeping() -> None:
    a, b = crafted()
    html = hr.comparison_html(compare(a, b))
    assert html.startswith('<section class="comparison">')
    assert "EINVAL | &lt;22&gt;" in html and "<22>" not in html
    assert html.index("Regressions") < html.index("Fixes") < html.index("Pre-existing")
    assert "<details><summary>New tests (1)</summary>" in html
    assert '<h3 class="regression">Regressions (2)</h3>' in html
    # Markup: another autoescaped template embeds it as is.
    assert hr.comparison_html(compare(a, b)).__html__() == html


def run_row(n: int, exit_code: int, **kw: object) -> RunRow:
    base = RunRow(
        pk=n,
        key=f"r{n}@2025-01-0{n}T03:00:00",
        run_id=f"r{n}",
        folder=f"/r/r{n}",
        cell="series-lab-qemu",
        kernel="series",
        config="lab",
        commit="c0ffee",
        describe="v7.3-rc1",
        dirty=False,
        diff_sha256=None,
        mbox_sha256=None,
        config_hash="cfg1",
        target="qemu",
        accelerator="kvm",
        qemu_version="10.0.2",
        started=f"2025-01-0{n}T03:00:00",
        ended=None,
        wall_s=60.0,
        verdict={0: "PASS", 1: "FAIL"}.get(exit_code, "ERROR"),
        exit_code=exit_code,
        complete=True,
        identity="c0ffee|cfg1|qemu",
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def test_compare_page_writes_both_files(tmp_path: Path) -> None:
    a, b = crafted()
    c = compare(a, b)
    md, html, text = hr.write_compare(
        c, run_row(1, 0), run_row(2, 1, describe="v7.3-rc1-dirty"), tmp_path / "out", "r1", "r2"
    )
    assert md.read_text() == text and text.startswith("# gmemlab compare: r1 → r2")
    assert (
        "**REGRESSED** (exit 1)" in text and "| kernel source | v7.3-rc1 | v7.3-rc1-dirty |" in text
    )
    page = html.read_text()
    assert '<section class="comparison">' in page and "<style>" in page
    assert not re.search(r"(src|href)=\"https?://", page) and "<script" not in page


def test_strip_is_valid_svg_with_a_tooltip_per_night() -> None:
    runs = [run_row(1, 0), run_row(2, 1), run_row(3, 2), run_row(4, 0, run_id="<&>")]
    strip = hr.cell_strip("series-lab-qemu", runs, last=3)
    assert strip.runs == 3 and strip.pass_rate == 1 / 3 and strip.rate_text == "33% (1/3)"
    root = ET.fromstring(strip.svg)
    assert root.tag == f"{SVG}svg"
    rects = root.findall(f"{SVG}rect")
    assert [r.get("fill") for r in rects] == [
        hr.STRIP_COLOURS["fail"],
        hr.STRIP_COLOURS["error"],
        hr.STRIP_COLOURS["pass"],
    ]
    tips = [r.findtext(f"{SVG}title") for r in rects]
    assert tips[0] == "2025-01-02T03:00:00 · r2 · FAIL (exit 1) · v7.3-rc1"
    assert tips[2] is not None and "<&>" in tips[2]
    assert root.findtext(f"{SVG}title") == "series-lab-qemu: last 3 runs, pass rate 33%"
    assert "script" not in strip.svg and "http" not in strip.svg.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )


def test_empty_strip_is_still_valid() -> None:
    strip = hr.cell_strip("c", [], last=14)
    assert strip.pass_rate is None and strip.rate_text == "no runs"
    assert ET.fromstring(strip.svg).findall(f"{SVG}rect") == []
    generic = hr.outcome_strip_svg([hr.StripPoint("weird", "?")])
    (rect,) = ET.fromstring(generic).findall(f"{SVG}rect")
    assert rect.get("fill") == hr.STRIP_COLOURS["none"]
