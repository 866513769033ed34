"""The matrix index: matrix.json, matrix.md and matrix.html from a matrix's cell runs."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from markupsafe import Markup

from harness import history_report, nightly, report
from harness.results import EXIT_USER, verdict_text

# Exit code precedence across cells: bad input first (nothing meaningful ran), then
# infrastructure trouble (results are missing), then test failures.
_PRECEDENCE = (EXIT_USER, 2, 1, 0)


@dataclass(frozen=True)
class CellRun:
    cell: str
    attempt: int
    exit_code: int
    verdict: str
    folder: str


@dataclass(frozen=True)
class AbRow:
    """One series cell's A/B against its base (matrix --ab)."""

    cell: str
    base_run: str
    headline: str
    exit_code: int


def combined_exit(codes: list[int]) -> int:
    for code in _PRECEDENCE:
        if code in codes:
            return code
    return max(codes, default=0)


def _night_json(n: nightly.CellNight) -> dict[str, object]:
    return {
        "runs": n.strip.runs,
        "run_pass_rate": n.strip.pass_rate,
        "test_pass_rates": list(n.test_rates),
        "latest": n.latest.key if n.latest else None,
        "previous": n.previous.key if n.previous else None,
        "regressions": [[c.suite, c.test] for c in n.regressions],
        "flaky": [
            {"suite": f.suite, "test": f.test, "passes": f.record.passes, "runs": f.record.runs}
            for f in n.flaky
        ],
        "failing": [
            {"suite": s, "test": t, "outcome": o, "flaky": f is not None}
            for s, t, o, f in n.failing
        ],
    }


def write_index(
    folder: Path,
    matrix: str,
    done: list[CellRun],
    nights: list[nightly.CellNight] | None = None,
    ab_rows: list[AbRow] | None = None,
    *,
    exit_code: int | None = None,
) -> None:
    """matrix.json, matrix.md and matrix.html: the nightly view (regressions since the
    previous night, flaky tests with their rates, each cell's last nights as a strip and
    its test pass rate over time) when there is a history, then one row per run with its
    pass rate over attempts."""
    rates: dict[str, list[int]] = {}
    for r in done:
        rates.setdefault(r.cell, []).append(r.exit_code)
    pass_rate = {c: sum(x == 0 for x in codes) / len(codes) for c, codes in rates.items()}
    code = combined_exit([r.exit_code for r in done]) if exit_code is None else exit_code
    index: dict[str, object] = {
        "matrix": matrix,
        "exit_code": code,
        "runs": [asdict(r) for r in done],
        "pass_rate": pass_rate,
    }
    if nights is not None:
        index["nightly"] = {n.cell: _night_json(n) for n in nights}
    if ab_rows:
        index["ab"] = [asdict(row) for row in ab_rows]
    (folder / "matrix.json").write_text(json.dumps(index, indent=2) + "\n")
    ctx = {
        "matrix": matrix,
        "code": code,
        "verdict": verdict_text(code, True),
        "done": done,
        "pass_rate": pass_rate,
        "nights": nights,
        "ab": ab_rows or [],
    }
    (folder / "matrix.md").write_text(
        report.template_env(autoescape=False).get_template("matrix.md.j2").render(ctx)
    )
    sections, strips, sparks = {}, {}, {}
    for n in nights or []:
        strips[n.cell] = Markup(n.strip.svg)
        sparks[n.cell] = Markup(n.rate_svg)
        if n.comparison is not None and n.regressions and n.previous and n.latest:
            sections[n.cell] = history_report.comparison_html(
                n.comparison, f"previous ({n.previous.run_id})", f"latest ({n.latest.run_id})"
            )
    html = report.template_env(autoescape=True).get_template("matrix.html.j2")
    (folder / "matrix.html").write_text(
        html.render(ctx, sections=sections, strips=strips, sparks=sparks)
    )
