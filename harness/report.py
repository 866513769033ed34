"""report.html and report.md from a run's summary, rendered with jinja2.

Verdict first, then the failures with their excerpts, then one table per suite, the
environment and the timings. The HTML carries its own CSS and nothing else, so it
opens in a browser with no network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from harness.results import SEVERITY, Outcome, RunRecord, TestResult

_PROBLEMS = (Outcome.CRASH, Outcome.FAIL, Outcome.TIMEOUT, Outcome.ERROR, Outcome.MISSING)


def template_env(autoescape: bool) -> jinja2.Environment:
    """The templates' environment, shared by every page the lab renders (compare too)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("harness", "templates"),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["md_cell"] = lambda s: str(s).replace("|", "\\|").replace("\n", " ")
    return env


def context(record: RunRecord) -> dict[str, Any]:
    order = {o: i for i, o in enumerate(SEVERITY)}
    problems = sorted(
        (r for r in record.results if r.outcome in _PROBLEMS),
        key=lambda r: order[r.outcome],
    )
    suites: dict[str, list[TestResult]] = {}
    for r in record.results:
        suites.setdefault(r.suite, []).append(r)
    for name in record.suites:
        suites.setdefault(name, [])
    return {
        "r": record,
        "problems": problems,
        "suites": suites,
        "outcomes": [o.value for o in SEVERITY],
        "stage_total": sum(s.get("seconds", 0.0) for s in record.stages.values()),
    }


def render(record: RunRecord, run_dir: Path) -> tuple[Path, Path]:
    """Write report.html and report.md into run_dir; returns their paths."""
    ctx = context(record)
    html = run_dir / "report.html"
    md = run_dir / "report.md"
    html.write_text(template_env(autoescape=True).get_template("report.html.j2").render(ctx))
    md.write_text(template_env(autoescape=False).get_template("report.md.j2").render(ctx))
    return html, md
