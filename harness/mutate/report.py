"""The mutation report (report.md, report.html) and the scores (scores.json).

Scores first, side by side per suite on the same mutants; then the kill matrix
(mutant x suite); then every survivor with its diff, its function and the source
around it, so a test author can write the test that kills it; then what was not
counted (unknown, stillborn, equivalent, duplicate) and why.

`scores(state)` / `load_scores(run_dir)` are what the history store keeps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.mutate import state as st
from harness.mutate.classify import ANY, BOOT, USABLE, SuiteScore, Verdict, score_table
from harness.mutate.mutants import Mutant
from harness.mutate.select import enclosing_function
from harness.mutate.state import MutantRecord, MutationState, Status
from harness.report import template_env  # the run report's jinja2 setup
from harness.results import Outcome

CONTEXT_LINES = 3
SCORES_FILE = "scores.json"
# One character per verdict in the Markdown matrix.
MARK = {Verdict.KILLED: "K", Verdict.SURVIVED: "S", Verdict.UNKNOWN: "?"}


def scores(state: MutationState) -> dict[str, SuiteScore]:
    """Per suite (and ANY) over the mutants that ran: killed, survived, unknown, score."""
    done = state.with_status(Status.DONE)
    return score_table((r.verdicts for r in done), state.suites)


def load_scores(run_dir: Path) -> dict[str, SuiteScore]:
    found = st.load(run_dir)
    if found is None:
        raise FileNotFoundError(run_dir / st.STATE_FILE)
    return scores(found)


@dataclass(frozen=True)
class Row:
    """One mutant as the report shows it."""

    rec: MutantRecord
    function: str | None
    context: list[tuple[int, str, bool]]  # (line number, text, is the mutated line)

    @property
    def m(self) -> Mutant:
        return self.rec.mutant

    def mark(self, suite: str) -> str:
        v = self.rec.verdicts.get(suite)
        return MARK.get(v, "") if v is not None else ""

    def survived_in(self, suites: list[str]) -> list[str]:
        return [s for s in suites if self.rec.verdicts.get(s) is Verdict.SURVIVED]


def context(state: MutationState, run_dir: Path) -> dict[str, Any]:
    texts = {
        f: (run_dir / st.PRISTINE_DIR / f).read_text(errors="replace")
        for f in state.files
        if (run_dir / st.PRISTINE_DIR / f).is_file()
    }

    def row(rec: MutantRecord) -> Row:
        text = texts.get(rec.mutant.file, "")
        lines = text.splitlines()
        lo = max(1, rec.mutant.line - CONTEXT_LINES)
        hi = min(len(lines), rec.mutant.line + CONTEXT_LINES)
        around = [(n, lines[n - 1], n == rec.mutant.line) for n in range(lo, hi + 1)]
        return Row(rec, enclosing_function(text, rec.mutant.line) if text else None, around)

    done = [row(r) for r in state.with_status(Status.DONE)]
    columns = list(state.suites)
    if any(BOOT in r.rec.verdicts for r in done):
        columns.append(BOOT)
    ignored = {
        suite: sorted(t for t, o in tests.items() if Outcome(o) not in USABLE)
        for suite, tests in (state.baseline or {}).items()
    }
    run_s = [r.rec.run_s for r in done]
    compile_s = [r.compile_s for r in state.walked() if r.status is not Status.PENDING]
    return {
        "s": state,
        "scores": scores(state),
        "any_row": ANY,
        "columns": columns,
        "suites": list(state.suites),
        "done": done,
        "survivors": [r for r in done if r.survived_in(state.suites)],
        "unknown": [r for r in done if Verdict.UNKNOWN in r.rec.verdicts.values()],
        "stillborn": state.with_status(Status.STILLBORN),
        "equivalent": state.with_status(Status.EQUIVALENT),
        "duplicate": state.with_status(Status.DUPLICATE),
        "pending": state.with_status(Status.READY, Status.PENDING),
        "ignored": {k: v for k, v in ignored.items() if v},
        "avg_run_s": sum(run_s) / len(run_s) if run_s else None,
        "avg_compile_s": sum(compile_s) / len(compile_s) if compile_s else None,
    }


def render(state: MutationState, run_dir: Path) -> tuple[Path, Path]:
    """Write report.html, report.md and scores.json into run_dir; returns the reports."""
    ctx = context(state, run_dir)
    html = run_dir / "report.html"
    md = run_dir / "report.md"
    html.write_text(template_env(autoescape=True).get_template("mutate.html.j2").render(ctx))
    md.write_text(template_env(autoescape=False).get_template("mutate.md.j2").render(ctx))
    data = {"complete": state.complete, "scores": [s.to_json() for s in ctx["scores"].values()]}
    (run_dir / SCORES_FILE).write_text(json.dumps(data, indent=2) + "\n")
    return html, md
