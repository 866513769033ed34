"""What the history adds to the pages: the comparison section, the compare page and
the nightly strip of a cell's last runs.

The section renderers return text for another page to embed (report.md/html for an
A/B run, matrix.md/html for night over night), so the comparison reads the same
wherever it appears. The strip is an inline SVG: no JavaScript, no network, a
<title> per square for the tooltip, so the page works as a file opened from disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from markupsafe import Markup  # jinja2's own dependency: marks the HTML section as safe

from harness.compare import REPORT_ORDER, Change, Comparison, Flakiness, Group
from harness.history_query import RunRow
from harness.report import template_env
from harness.results import EXIT_OK, EXIT_TEST_FAILED

# Title, the headline's singular and plural noun, and the definition under the title.
_GROUPS: dict[Group, tuple[str, str, str, str]] = {
    Group.REGRESSION: (
        "Regressions",
        "regression",
        "regressions",
        "Passed or skipped in A; failed, crashed, errored, timed out or went missing in B.",
    ),
    Group.FIX: ("Fixes", "fix", "fixes", "Failed in A, passed in B."),
    Group.PREEXISTING: (
        "Pre-existing failures",
        "pre-existing failure",
        "pre-existing failures",
        "Failing in both A and B: not B's doing.",
    ),
    Group.FLAKY: (
        "Flaky",
        "flaky test",
        "flaky tests",
        "Failed in some runs of the same commit, config and target and not in others; "
        "the pass rate is over those runs. A flaky failure is not counted as a regression.",
    ),
    Group.NEW: ("New tests", "new test", "new tests", "No result in A."),
    Group.GONE: ("Gone", "gone test", "gone tests", "No result in B."),
    Group.SKIP_CHANGE: (
        "Skip changes",
        "skip change",
        "skip changes",
        "Skipped in one run and not the other, or skipped for another reason.",
    ),
}
# Bookkeeping groups fold away in HTML; what a reviewer must read stays open.
_FOLDED = frozenset({Group.NEW, Group.GONE, Group.SKIP_CHANGE})


@dataclass(frozen=True)
class Row:
    suite: str
    test: str
    a: str
    b: str
    detail: str
    rate: str
    # CSS classes of the two outcomes ("fail", "pass", "absent").
    a_css: str
    b_css: str


@dataclass(frozen=True)
class Section:
    group: str
    title: str
    blurb: str
    rows: tuple[Row, ...]
    rated: bool
    folded: bool


def _rate(change: Change) -> str:
    pick: tuple[Flakiness, str] | None = None
    if change.flaky_b is not None and change.flaky_b.flaky:
        pick = (change.flaky_b, "B's")
    elif change.flaky_a is not None and change.flaky_a.flaky:
        pick = (change.flaky_a, "A's")
    if pick is None:
        return ""
    f, side = pick
    return f"{f.passes}/{f.runs} ({f.pass_rate:.0%}) on {side} identity"


def _detail(change: Change) -> str:
    a, b = change.a, change.b
    if change.group is Group.SKIP_CHANGE and a is not None and b is not None:
        text = f"{a.reason or a.outcome.value} → {b.reason or b.outcome.value}"
    elif change.group in (Group.FIX, Group.GONE) and a is not None:
        text = a.reason
    else:
        text = b.reason if b is not None else ""
    # A flaky row's note repeats its rate column; other notes add something.
    if change.note and change.group is not Group.FLAKY:
        text = f"{text} ({change.note})" if text else change.note
    return text


def _row(change: Change) -> Row:
    a = change.a.outcome.value if change.a else "—"
    b = change.b.outcome.value if change.b else "—"
    return Row(
        change.suite,
        change.test,
        a,
        b,
        _detail(change),
        _rate(change),
        a if change.a else "absent",
        b if change.b else "absent",
    )


def headline(c: Comparison) -> str:
    parts = []
    for group in REPORT_ORDER:
        n = c.count(group)
        if n:
            _, one, many, _ = _GROUPS[group]
            parts.append(f"{n} {one if n == 1 else many}")
    unchanged = c.count(Group.UNCHANGED)
    parts.append(f"{unchanged} unchanged")
    lead = "**Regressed.**" if c.regressed else "**No regressions.**"
    return f"{lead} " + " · ".join(parts)


def section_context(c: Comparison, a_name: str = "A", b_name: str = "B") -> dict[str, Any]:
    """The `cmp` variable comparison.md.j2 / comparison.html.j2 render."""
    sections = []
    for group in REPORT_ORDER:
        changes = c.group(group)
        if not changes:
            continue
        title, _, _, blurb = _GROUPS[group]
        sections.append(
            Section(
                group=group.value.replace(" ", "-"),
                title=title,
                blurb=blurb,
                rows=tuple(_row(ch) for ch in changes),
                rated=group is Group.FLAKY,
                folded=group in _FOLDED,
            )
        )
    return {
        "cmp": {
            "a_name": a_name,
            "b_name": b_name,
            "headline": headline(c),
            "headline_plain": headline(c).replace("**", ""),
            "regressed": c.regressed,
            "same_identity": c.same_identity,
            "sections": sections,
        }
    }


def comparison_md(c: Comparison, a_name: str = "A", b_name: str = "B") -> str:
    """The comparison section as Markdown (## heading, a table per group, regressions
    first), for report.md, matrix.md or compare.md."""
    env = template_env(autoescape=False)
    return env.get_template("comparison.md.j2").render(section_context(c, a_name, b_name))


def comparison_html(c: Comparison, a_name: str = "A", b_name: str = "B") -> Markup:
    """The comparison section as an escaped HTML fragment (<section>), safe to place
    in another autoescaped template as is."""
    env = template_env(autoescape=True)
    html = env.get_template("comparison.html.j2").render(section_context(c, a_name, b_name))
    return Markup(html)


# --- the compare page ---------------------------------------------------------------


def _side(run: RunRow, ref: str) -> dict[str, str]:
    return {
        "ref": ref,
        "cell": run.cell,
        "source": run.source + (" (dirty)" if run.dirty and "dirty" not in run.source else ""),
        "commit": run.commit or "unknown",
        "config_hash": (run.config_hash or "unknown")[:16],
        "target": f"{run.target or 'unknown'} ({run.accelerator or 'unknown accelerator'})",
        "qemu": run.qemu_version or "unknown",
        "started": run.started,
        "verdict": f"{run.verdict} (exit {run.exit_code})",
        "folder": run.folder,
    }


def write_compare(
    c: Comparison, a: RunRow, b: RunRow, out_dir: Path, a_ref: str, b_ref: str
) -> tuple[Path, Path, str]:
    """compare.md and compare.html in out_dir: the two runs side by side, then the
    comparison section. Returns both paths and the Markdown (what the CLI prints)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = {
        **section_context(c, f"A ({a_ref})", f"B ({b_ref})"),
        "a": _side(a, a_ref),
        "b": _side(b, b_ref),
        "exit_code": c.exit_code,
        "rows": [
            ("cell", "cell"),
            ("kernel source", "source"),
            ("commit", "commit"),
            ("config hash", "config_hash"),
            ("target", "target"),
            ("QEMU", "qemu"),
            ("started", "started"),
            ("verdict", "verdict"),
            ("folder", "folder"),
        ],
    }
    md_text = template_env(autoescape=False).get_template("compare.md.j2").render(ctx)
    html_text = template_env(autoescape=True).get_template("compare.html.j2").render(ctx)
    md, html = out_dir / "compare.md", out_dir / "compare.html"
    md.write_text(md_text)
    html.write_text(html_text)
    return md, html, md_text


# --- the nightly strip --------------------------------------------------------------

# Colour per outcome class; "none" is a night without a run.
STRIP_COLOURS = {
    "pass": "#2e9e44",
    "skip": "#9e9e9e",
    "fail": "#c62828",
    "crash": "#7f0000",
    "error": "#e0a000",
    "timeout": "#e0a000",
    "missing": "#e0a000",
    "none": "#e0e0e0",
}


@dataclass(frozen=True)
class StripPoint:
    outcome: str  # a key of STRIP_COLOURS
    title: str  # the tooltip: when, which run, what happened


def outcome_strip_svg(
    points: Sequence[StripPoint], *, label: str = "", size: int = 12, gap: int = 3
) -> str:
    """One square per point, left (oldest) to right (newest), as a standalone <svg>.

    Valid XML on its own and valid inline in HTML5; every text is escaped.
    """
    width = max(len(points) * (size + gap) - gap, size)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="strip" role="img" '
        f'width="{width}" height="{size}" viewBox="0 0 {width} {size}" '
        f"aria-label={quoteattr(label or 'outcomes')}>",
    ]
    if label:
        parts.append(f"<title>{escape(label)}</title>")
    for i, point in enumerate(points):
        colour = STRIP_COLOURS.get(point.outcome, STRIP_COLOURS["none"])
        parts.append(
            f'<rect x="{i * (size + gap)}" y="0" width="{size}" height="{size}" rx="2" '
            f'fill="{colour}"><title>{escape(point.title)}</title></rect>'
        )
    parts.append("</svg>")
    return "".join(parts)


def run_outcome(run: RunRow) -> str:
    """A run's colour class from its exit code (DESIGN.md): 0 pass, 1 fail, else error."""
    if run.exit_code == EXIT_OK:
        return "pass"
    return "fail" if run.exit_code == EXIT_TEST_FAILED else "error"


@dataclass(frozen=True)
class CellStrip:
    cell: str
    svg: str
    # Share of the drawn runs that passed (exit 0); None without runs.
    pass_rate: float | None
    runs: int

    @property
    def rate_text(self) -> str:
        if self.pass_rate is None:
            return "no runs"
        passed = round(self.pass_rate * self.runs)
        return f"{self.pass_rate:.0%} ({passed}/{self.runs})"


def cell_strip(cell: str, runs: Sequence[RunRow], last: int = 14) -> CellStrip:
    """The cell's last `last` runs (history_query.runs_for_cell order: oldest first) as a
    strip, with the pass rate over them."""
    shown = list(runs)[-last:] if last > 0 else []
    points = [
        StripPoint(
            run_outcome(r),
            f"{r.started} · {r.run_id} · {r.verdict} (exit {r.exit_code}) · {r.source}",
        )
        for r in shown
    ]
    rate = sum(r.exit_code == EXIT_OK for r in shown) / len(shown) if shown else None
    label = f"{cell}: last {len(shown)} runs"
    if rate is not None:
        label += f", pass rate {rate:.0%}"
    return CellStrip(cell, outcome_strip_svg(points, label=label), rate, len(shown))


def rate_sparkline_svg(
    rates: Sequence[float | None],
    titles: Sequence[str] = (),
    *,
    label: str = "",
    step: int = 15,
    height: int = 24,
) -> str:
    """A pass rate over time (0..1 per run, oldest first) as a small inline <svg>: a line
    through the runs with a dot per run and its value as the dot's tooltip. A run
    without a rate (no tests) breaks the line. Valid XML; every text is escaped."""
    width = max((len(rates) - 1) * step, 0) + 8
    pad = 3

    def y(rate: float) -> float:
        return round(pad + (1 - rate) * (height - 2 * pad), 1)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="spark" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f"aria-label={quoteattr(label or 'pass rate over time')}>",
    ]
    if label:
        parts.append(f"<title>{escape(label)}</title>")
    parts.append(
        f'<line x1="0" y1="{y(1.0)}" x2="{width}" y2="{y(1.0)}" stroke="#ddd" stroke-width="1"/>'
    )
    segment: list[str] = []
    segments: list[list[str]] = []
    for i, rate in enumerate(rates):
        if rate is None:
            if segment:
                segments.append(segment)
            segment = []
            continue
        segment.append(f"{4 + i * step},{y(rate)}")
    if segment:
        segments.append(segment)
    for seg in segments:
        if len(seg) > 1:
            parts.append(
                f'<polyline fill="none" stroke="#555" stroke-width="1.5" points="{" ".join(seg)}"/>'
            )
    for i, rate in enumerate(rates):
        if rate is None:
            continue
        colour = STRIP_COLOURS["pass"] if rate >= 1.0 else STRIP_COLOURS["fail"]
        title = titles[i] if i < len(titles) else f"run {i + 1}"
        parts.append(
            f'<circle cx="{4 + i * step}" cy="{y(rate)}" r="2.5" fill="{colour}">'
            f"<title>{escape(f'{title}: {rate:.0%} of tests passed')}</title></circle>"
        )
    parts.append("</svg>")
    return "".join(parts)
