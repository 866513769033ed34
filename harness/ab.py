"""A/B: the series kernel against its base, with the same config, image and suites.

`lab run --kernel SERIES --ab BASE` runs BASE first, then SERIES (so results/latest is
the series), each a normal run recorded in the history; then compares them test by
test (harness.compare, with the flaky rules over each kernel's history) and renders the
series run's report.md/html again with the comparison as its first section. What the
series breaks that the base passes is the finding; what fails on both is named
"pre-existing" and does not fail the A/B.

BASE is a lab.yaml kernel name or a tree's path; `--ab` alone means the series' own
base: the git source's `base:` commit in lab.yaml, run as the same repository at that
commit.

Exit code: 1 when the series regressed (a test that passed or skipped on the base
fails, crashes, errors, times out or goes missing) or has a new test that fails; else
the worse of the two runs' infrastructure codes (3, then 2: a comparison with a broken
side proves nothing); else 0, even when both fail the same tests.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from harness import (
    compare,
    history,
    history_query,
    history_record,
    history_report,
    interrupt,
    report,
    runner,
)
from harness.compare import BAD, Comparison, Group
from harness.config import LabConfig
from harness.errors import LabError, UserError
from harness.progress import Progress
from harness.results import (
    EXIT_INFRA,
    EXIT_OK,
    EXIT_TEST_FAILED,
    EXIT_USER,
    load_summary,
    new_run_id,
)

AB_JSON = "ab.json"


@dataclass(frozen=True)
class Base:
    """The kernel a series is compared against."""

    lab: LabConfig  # the lab to run it with (a derived kernel entry for `--ab` alone)
    kernel: str  # what --kernel the base run gets
    label: str  # how the report names it


def resolve_base(lab: LabConfig, kernel: str, base: str) -> Base:
    """The base for `--ab BASE`; an empty BASE means the series' own base commit."""
    if base:
        if base == kernel:
            raise UserError(
                f"--ab {base}: the kernel compared with itself", "name the base: --ab mainline"
            )
        runner.check_kernel(lab, runner.RunRequest(kernel=base, config="", suites=()))
        return Base(lab, base, base)
    spec = lab.kernels.get(kernel)
    if spec is None or spec.git is None or spec.git.base is None:
        raise UserError(
            f"--ab without a kernel: {kernel!r} has no base: in lab.yaml to compare against",
            "name the base kernel, e.g. --ab mainline (a lab.yaml name or a tree's path), "
            "or add base: <commit> under the kernel's git: in lab.yaml",
        )
    git, commit = spec.git, spec.git.base
    name = f"{kernel}-base"
    derived = spec.model_copy(update={"git": git.model_copy(update={"ref": commit, "base": None})})
    return Base(
        lab.model_copy(update={"kernels": {**lab.kernels, name: derived}}),
        name,
        f"{kernel}'s base {commit[:12]}",
    )


@dataclass(frozen=True)
class Verdict:
    comparison: Comparison
    exit_code: int
    # Tests with no result on the base that fail on the series.
    new_failures: tuple[compare.Change, ...]
    headline: str


def new_failures(c: Comparison) -> tuple[compare.Change, ...]:
    return tuple(ch for ch in c.group(Group.NEW) if ch.b is not None and ch.b.outcome in BAD)


def verdict(
    c: Comparison, base_exit: int, series_exit: int, base_label: str, *, complete: bool = True
) -> Verdict:
    """The A/B's exit code and its one-line headline (see the module docstring);
    complete: both runs ran to their end."""
    fresh = new_failures(c)
    if c.regressed or fresh:
        code = EXIT_TEST_FAILED
    elif EXIT_USER in (base_exit, series_exit):
        code = EXIT_USER
    elif EXIT_INFRA in (base_exit, series_exit) or not complete:
        code = EXIT_INFRA
    else:
        code = EXIT_OK
    parts = []
    n = c.count(Group.REGRESSION)
    if n:
        names = ", ".join(f"{ch.suite}/{ch.test}" for ch in c.group(Group.REGRESSION)[:5])
        more = f" and {n - 5} more" if n > 5 else ""
        parts.append(f"{n} regression{'s' if n != 1 else ''} ({names}{more})")
    if fresh:
        parts.append(f"{len(fresh)} new failing test{'s' if len(fresh) != 1 else ''}")
    pre = c.count(Group.PREEXISTING)
    if pre:
        parts.append(f"{pre} pre-existing failure{'s' if pre != 1 else ''} (fail on both)")
    flaky = c.count(Group.FLAKY)
    if flaky:
        parts.append(f"{flaky} flaky")
    if code == EXIT_INFRA and not parts:
        parts.append("a run did not finish cleanly: the comparison may be incomplete")
    if not parts:
        parts.append("no regressions")
    return Verdict(c, code, fresh, f"A/B against {base_label}: " + "; ".join(parts))


def compare_runs(history_root: Path, base_dir: Path, series_dir: Path) -> Comparison:
    """Base (A) against series (B), with each identity's history for the flaky rules;
    from the two summaries alone when the history cannot be read."""
    try:
        with history.opened(history.default_path(history_root)) as db:
            a = history_record.record_run(db, base_dir).run
            b = history_record.record_run(db, series_dir).run
            return compare.compare(
                history_query.results_of(db, a),
                history_query.results_of(db, b),
                history_query.outcomes_by_identity(db, a.identity),
                history_query.outcomes_by_identity(db, b.identity),
                same_identity=a.identity is not None and a.identity == b.identity,
            )
    except LabError:
        return compare.compare(load_summary(base_dir).results, load_summary(series_dir).results)


def lead_for(v: Verdict, base_name: str, series_name: str) -> report.Lead:
    c = v.comparison
    md = history_report.comparison_md(c, base_name, series_name)
    html = history_report.comparison_html(c, base_name, series_name)
    if v.new_failures:
        rows = "\n".join(
            f"- {ch.suite} / {ch.test}: {ch.b.outcome.value if ch.b else ''}"
            for ch in v.new_failures
        )
        md += (
            f"\n### New failing tests ({len(v.new_failures)})\n\nNo result on the base.\n\n{rows}\n"
        )
    return report.Lead(md, html, v.headline, regressed=v.exit_code == EXIT_TEST_FAILED)


def write_ab(series_dir: Path, base_dir: Path, base_label: str, v: Verdict) -> Path:
    """ab.json in the series run folder: both runs, the exit code and the findings; and
    the series' report again, led by the comparison."""
    base, series = load_summary(base_dir), load_summary(series_dir)
    lead = lead_for(v, f"base {base_label} ({base.run_id})", f"series ({series.run_id})")
    report.render(series, series_dir, lead)

    def side(record_dir: Path, label: str) -> dict[str, object]:
        rec = load_summary(record_dir)
        return {
            "label": label,
            "run_id": rec.run_id,
            "folder": str(record_dir),
            "exit_code": rec.exit_code,
            "verdict": rec.verdict,
        }

    def tests(group: Group) -> list[list[str]]:
        return [[ch.suite, ch.test] for ch in v.comparison.group(group)]

    data = {
        "exit_code": v.exit_code,
        "headline": v.headline,
        "base": side(base_dir, base_label),
        "series": side(series_dir, series.environment.get("kernel", series.cell)),
        "regressions": tests(Group.REGRESSION),
        "new_failures": [[ch.suite, ch.test] for ch in v.new_failures],
        "pre_existing": tests(Group.PREEXISTING),
        "fixes": tests(Group.FIX),
        "flaky": tests(Group.FLAKY),
    }
    path = series_dir / AB_JSON
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def run_ab(
    lab: LabConfig,
    req: runner.RunRequest,
    base: str,
    progress: Progress | None = None,
    run_one: runner.RunOne | None = None,
) -> int:
    """Run the base, then the series, then judge; returns the A/B's exit code."""
    p = progress or Progress()
    run = run_one or runner.run
    if req.bzimage is not None:
        raise UserError("--ab cannot reuse a bare --bzimage", "pass --manifest, or neither")
    chosen = resolve_base(lab, req.kernel, base)
    runner.check_kernel(lab, req)
    run_id = req.run_id or new_run_id()
    base_id = f"{run_id}-base"
    base_req = dataclasses.replace(
        req, kernel=chosen.kernel, manifest=None, bzimage=None, run_id=base_id
    )
    series_req = dataclasses.replace(req, run_id=run_id)
    p.say(f"[ab] 1/2: the base, {chosen.label}")
    base_exit = run(chosen.lab, base_req, p)
    interrupt.check()  # the base run caught Ctrl-C or SIGTERM: no series run after it
    p.say(f"[ab] 2/2: the series, {req.kernel}")
    series_exit = run(lab, series_req, p)
    base_dir = req.results_root / base_id
    series_dir = req.results_root / run_id
    v = judge(req.history_root or req.results_root, base_dir, series_dir, base_exit, series_exit,
              chosen.label)  # fmt: skip
    if v is None:
        p.say("[ab] no comparison: a run left no summary.json")
        return max(base_exit, series_exit, EXIT_INFRA)
    write_ab(series_dir, base_dir, chosen.label, v)
    p.say(f"\n[ab] {v.headline}")
    for ch in v.comparison.group(Group.REGRESSION):
        a = ch.a.outcome.value if ch.a else "-"
        b = ch.b.outcome.value if ch.b else "-"
        p.say(f"[ab]   REGRESSION {ch.suite} / {ch.test}: {a} on the base, {b} on the series")
    p.say(f"[ab] exit {v.exit_code}; report: {series_dir / 'report.html'}")
    return v.exit_code


def judge(
    history_root: Path,
    base_dir: Path,
    series_dir: Path,
    base_exit: int,
    series_exit: int,
    base_label: str,
) -> Verdict | None:
    """The comparison and verdict of two finished runs; None when one has no summary."""
    if not (base_dir / "summary.json").is_file() or not (series_dir / "summary.json").is_file():
        return None
    c = compare_runs(history_root, base_dir, series_dir)
    complete = load_summary(base_dir).complete and load_summary(series_dir).complete
    return verdict(c, base_exit, series_exit, base_label, complete=complete)
