"""The mutation report (report.md, report.html) and the scores (scores.json).

Scores first, side by side per suite on the same mutants; then the kill matrix
(mutant x suite); then every survivor with its diff, its function and the source
around it, so a test author can write the test that kills it; then what was not
counted (unknown, stillborn, equivalent, duplicate) and why.

`scores(state)` / `load_scores(run_dir)` are what the history store keeps. With a notes
file (notes.py), each survivor's note is shown beside its diff, the survivors argued
equivalent get a section of their own, and the scores are given twice: raw, and over the
non-equivalent mutants only; scores.json then names the ids each note accounts for.
"""

from __future__ import annotations

import html as htmlmod
import json
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.mutate import state as st
from harness.mutate.classify import ANY, BOOT, USABLE, SuiteScore, Verdict, score_table
from harness.mutate.mutants import Mutant
from harness.mutate.notes import Accounting, Note, Notes, account
from harness.mutate.select import enclosing_function
from harness.mutate.state import MutantRecord, MutationState, Status
from harness.report import template_env  # the run report's jinja2 setup
from harness.results import Outcome

CONTEXT_LINES = 3
SCORES_FILE = "scores.json"
# One character per verdict in the Markdown matrix.
MARK = {Verdict.KILLED: "K", Verdict.SURVIVED: "S", Verdict.UNKNOWN: "?"}


def scores(state: MutationState, exclude: Collection[str] = ()) -> dict[str, SuiteScore]:
    """Per suite (and ANY) over the mutants that ran: killed, survived, unknown, score.
    `exclude`: mutant ids left out (the ones argued equivalent, for the second score)."""
    done = [r for r in state.with_status(Status.DONE) if r.mutant.id not in exclude]
    return score_table((r.verdicts for r in done), state.suites)


def load_scores(run_dir: Path) -> dict[str, SuiteScore]:
    found = st.load(run_dir)
    if found is None:
        raise FileNotFoundError(run_dir / st.STATE_FILE)
    return scores(found)


def load_scores_json(run_dir: Path) -> dict[str, Any]:
    """The run's last scores.json ({} when it is missing or damaged: it is rewritten by
    every render, so the history takes what it can and the state is the truth)."""
    try:
        data = json.loads((run_dir / SCORES_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@dataclass(frozen=True)
class Row:
    """One mutant as the report shows it."""

    rec: MutantRecord
    function: str | None
    context: list[tuple[int, str, bool]]  # (line number, text, is the mutated line)
    note: Note | None = None
    # Argued equivalent, but a suite (or the boot) killed it.
    contradicted: bool = False

    @property
    def m(self) -> Mutant:
        return self.rec.mutant

    def mark(self, suite: str) -> str:
        v = self.rec.verdicts.get(suite)
        return MARK.get(v, "") if v is not None else ""

    def survived_in(self, suites: list[str]) -> list[str]:
        return [s for s in suites if self.rec.verdicts.get(s) is Verdict.SURVIVED]

    def killed_in(self) -> list[str]:
        return [s for s, v in self.rec.verdicts.items() if v is Verdict.KILLED]


def _open_per_suite(state: MutationState, acc: Accounting) -> dict[str, int]:
    """Per suite (and ANY: every suite survived), its survivors no note accounts for."""
    opened = set(acc.open)
    recs = [r for r in state.with_status(Status.DONE) if r.mutant.id in opened]
    out = {s: sum(r.verdicts.get(s) is Verdict.SURVIVED for r in recs) for s in state.suites}
    out[ANY] = sum(all(r.verdicts.get(s) is Verdict.SURVIVED for s in state.suites) for r in recs)
    return out


def _status_of(state: MutationState, mid: str) -> str:
    rec = state.records.get(mid)
    if rec is None:
        return "not run (outside the sample, or not reached yet)"
    if rec.status is Status.DONE:
        return "killed" if Verdict.KILLED in rec.verdicts.values() else "not decided (unknown)"
    return rec.status.value


def context(state: MutationState, run_dir: Path, notes: Notes | None = None) -> dict[str, Any]:
    texts = {
        f: (run_dir / st.PRISTINE_DIR / f).read_text(errors="replace")
        for f in state.files
        if (run_dir / st.PRISTINE_DIR / f).is_file()
    }
    by_id = notes.by_id if notes is not None else {}
    acc = account(state.with_status(Status.DONE), state.suites, notes)

    def row(rec: MutantRecord) -> Row:
        text = texts.get(rec.mutant.file, "")
        lines = text.splitlines()
        lo = max(1, rec.mutant.line - CONTEXT_LINES)
        hi = min(len(lines), rec.mutant.line + CONTEXT_LINES)
        around = [(n, lines[n - 1], n == rec.mutant.line) for n in range(lo, hi + 1)]
        function = enclosing_function(text, rec.mutant.line) if text else None
        mid = rec.mutant.id
        return Row(rec, function, around, by_id.get(mid), mid in acc.contradicted)

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
    equivalent = set(acc.equivalent)
    return {
        "s": state,
        "scores": scores(state),
        # The second score and the notes' columns: only when a notes file was given.
        "ne_scores": scores(state, equivalent) if notes is not None else None,
        "open_per_suite": _open_per_suite(state, acc),
        "notes": notes,
        "acc": acc,
        "any_row": ANY,
        "columns": columns,
        "suites": list(state.suites),
        "done": done,
        "survivors": [r for r in done if r.survived_in(state.suites) and r.m.id not in equivalent],
        "argued_equivalent": [r for r in done if r.m.id in equivalent],
        # Contradicted notes on mutants that survived nothing (the others are survivors).
        "contradicted": [r for r in done if r.contradicted and not r.survived_in(state.suites)],
        "elsewhere": [(i, _status_of(state, i), by_id[i]) for i in acc.elsewhere],
        "unknown": [r for r in done if Verdict.UNKNOWN in r.rec.verdicts.values()],
        "stillborn": state.with_status(Status.STILLBORN),
        "equivalent": state.with_status(Status.EQUIVALENT),
        "duplicate": state.with_status(Status.DUPLICATE),
        "pending": state.with_status(Status.READY, Status.PENDING),
        "ignored": {k: v for k, v in ignored.items() if v},
        "avg_run_s": sum(run_s) / len(run_s) if run_s else None,
        "avg_compile_s": sum(compile_s) / len(compile_s) if compile_s else None,
    }


def _md_quote(text: str) -> str:
    """Note text as a Markdown block quote; the notes file is untrusted, so any HTML in
    it is escaped for the Markdown viewers that would render it."""
    lines = htmlmod.escape(text, quote=False).splitlines() or [""]
    return "\n".join(f"> {line}" for line in lines)


def render(
    state: MutationState,
    run_dir: Path,
    notes: Notes | None = None,
    *,
    kernel: str | None = None,
    config: str | None = None,
) -> tuple[Path, Path]:
    """Write report.html, report.md and scores.json into run_dir; returns the reports.

    kernel and config are kept in scores.json for the history (state.json has only the
    tree's path)."""
    ctx = context(state, run_dir, notes)
    html = run_dir / "report.html"
    md = run_dir / "report.md"
    html.write_text(template_env(autoescape=True).get_template("mutate.html.j2").render(ctx))
    md_env = template_env(autoescape=False)
    md_env.filters["md_quote"] = _md_quote
    md.write_text(md_env.get_template("mutate.md.j2").render(ctx))
    acc: Accounting = ctx["acc"]
    data = {
        "complete": state.complete,
        "kernel": kernel,
        "config": config,
        "scores": [s.to_json() for s in ctx["scores"].values()],
        "notes": None if notes is None else {"file": str(notes.path), "sha256": notes.sha256},
        "non_equivalent_scores": (
            None if ctx["ne_scores"] is None else [s.to_json() for s in ctx["ne_scores"].values()]
        ),
        # Survivor ids by what accounts for them (with no notes file, all are open).
        "survivors": {
            "equivalent": list(acc.equivalent),
            "contradicted": list(acc.contradicted),
            "killed_by": list(acc.killed_by),
            "open": list(acc.open),
        },
    }
    (run_dir / SCORES_FILE).write_text(json.dumps(data, indent=2) + "\n")
    return html, md
