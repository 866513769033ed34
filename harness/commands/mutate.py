"""`lab mutate`: plant small bugs in the kernel code under test and count which the suites
catch (issue 14). The work is in harness/mutate/; this parses arguments and wires the
stages: source -> mutants -> copy of the tree -> pristine build -> engine -> report."""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

from harness import history_mutate, interrupt, names
from harness.build import load_build
from harness.cachelock import locked
from harness.commands.run import add_suite_timeout_argument
from harness.config import LabConfig
from harness.errors import InfraError, UserError
from harness.kmake import build_env, kernel_make
from harness.mutate import mutants, notes, select
from harness.mutate import state as st
from harness.mutate.compile import ObjectBuild
from harness.mutate.engine import DEFAULT_DEADLINE_S, Engine, open_state
from harness.mutate.labrunner import LabRunner
from harness.mutate.report import render, scores
from harness.mutate.state import MutationState, Workspace
from harness.mutate.workcopy import lock_path, work_copy
from harness.paths import REPO_ROOT
from harness.source import SourceTree, prepare_source

# The copy's first build is a cold one (a defconfig-sized kernel on two cores: 15-30 min).
PRISTINE_BUILD_S = 4 * 3600.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "mutate",
        help="mutation testing: which planted kernel bugs do the suites catch",
        description=(
            "Generate mutants of the named kernel C files (universalmutator), drop those "
            "that do not compile or compile to the pristine object (TCE), then build, "
            "boot and run the suites on each remaining mutant, one at a time, and write "
            "report.md/report.html with the mutation score per suite, the kill matrix "
            "and every survivor. Resumable: the same command continues an interrupted "
            "run (the state is in the run folder)."
        ),
    )
    parser.add_argument(
        "--file",
        action="append",
        required=True,
        metavar="PATH",
        help="a .c file of the kernel tree to mutate, e.g. virt/kvm/guest_memfd.c (repeatable)",
    )
    parser.add_argument("--kernel", help="a kernel name from lab.yaml or a tree's path")
    parser.add_argument("--config", help="a config set from lab.yaml (default: defaults.config)")
    parser.add_argument(
        "--suites",
        help="comma-separated suite names (default: defaults.suites), scored side by side",
    )
    parser.add_argument("--lines", metavar="A-B[,C-D]", help="only these lines of each file")
    parser.add_argument(
        "--function",
        action="append",
        default=[],
        metavar="NAME",
        help="only this function's lines (repeatable)",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--diff", type=Path, metavar="FILE", help="only the lines a unified diff adds or changes"
    )
    where.add_argument(
        "--series",
        action="store_true",
        help="only the lines the series changes: git diff against the kernel's base (lab.yaml)",
    )
    parser.add_argument(
        "--mutant",
        action="append",
        default=[],
        metavar="ID",
        help="only this mutant (its id from --list or a report; repeatable): e.g. to check "
        "that a new test kills a survivor",
    )
    parser.add_argument(
        "--sample",
        type=int,
        metavar="N",
        help="run N mutants (stillborn/equivalent ones not counted)",
    )
    parser.add_argument("--seed", type=int, default=0, help="the sample's seed (default 0)")
    parser.add_argument(
        "--deadline",
        type=float,
        default=DEFAULT_DEADLINE_S,
        metavar="SECONDS",
        help=f"per mutant: build, boot and suites (default {DEFAULT_DEADLINE_S:.0f})",
    )
    add_suite_timeout_argument(parser)
    parser.add_argument(
        "--results",
        type=Path,
        metavar="DIR",
        help="the run folder (default: results/mutate-<kernel>-<config>-<settings hash>, so "
        "the same command resumes the same run)",
    )
    parser.add_argument(
        "--notes",
        type=Path,
        metavar="FILE",
        help="survivor notes (YAML: mutant id -> status equivalent|killed-by|open, test, why) "
        "shown beside each survivor; not part of the run's settings, so repeating a finished "
        "run's command with new notes just renders its report again",
    )
    parser.add_argument(
        "--list", action="store_true", help="print the selected mutants in sampling order and stop"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, lab: LabConfig) -> int:
    kernel = args.kernel or lab.defaults.kernel
    config_name = args.config or lab.defaults.config
    suites = _suites(args.suites, lab)
    if config_name not in lab.configs:
        raise UserError(
            f"unknown config set {config_name!r}", "pass --config with a name from lab.yaml"
        )
    if args.sample is not None and args.sample < 1:
        raise UserError("--sample must be at least 1", "pass --sample N with N >= 1")
    files = [_relative(f) for f in args.file]
    src = prepare_source(lab, kernel)
    diff_text = _diff_text(args, lab, kernel, src, files)
    candidates, selected = _candidates(src, files, args, diff_text)
    filters = _filters(args, src)
    if args.list:
        _print_list(candidates, selected)
        return 0
    settings = {"files": sorted(files), "suites": suites, "filters": filters}
    settings |= {"sample": args.sample, "seed": args.seed}
    if args.suite_timeout is not None:
        # A timeout decides verdicts (a slow suite is a kill): another cap, another run.
        settings["suite_timeout"] = args.suite_timeout
    run_dir = (args.results or _default_run_dir(kernel, config_name, settings)).resolve()
    # Checked before anything runs: a typo must not wait for the end of a long run.
    survivor_notes = notes.load(args.notes, {m.id for m in candidates}) if args.notes else None
    open_run = functools.partial(
        open_state,
        run_dir,
        src.path,
        files,
        suites,
        seed=args.seed,
        sample=args.sample,
        filters=filters,
        candidates=candidates,
    )
    found = st.load(run_dir)
    if found is not None and found.complete:
        # Finished: nothing to copy, build or run; render it (new notes?) and record it.
        say(f"[mutate] {run_dir} is a finished run: rendering its report")
        _report(open_run(), run_dir, survivor_notes, kernel, config_name)
        return 0
    work = work_copy(src)
    say(f"[mutate] {len(candidates)} mutants of {', '.join(files)}; run folder {run_dir}")
    say(f"[mutate] mutating a copy of the tree: {work}")
    state: MutationState | None = None
    try:
        # Ctrl-C and SIGTERM (CI cancelling the job) unwind the same way: the pristine
        # file is restored, the running lab run is stopped and the report is written.
        with interrupt.handlers(), locked(lock_path(work), f"mutation tree {work.name}"):
            state = open_run()
            # Before building anything: a run that died with a mutant applied left it.
            for file in Workspace(work, run_dir, state).ensure_pristine():
                say(f"[mutate] {file}: restored the pristine file (a previous run died)")
            runner = LabRunner(
                config=config_name,
                out_dir=run_dir / "attempts",
                lab_file=args.lab,
                suite_timeout_s=args.suite_timeout,
            )
            compiler = _object_build(runner, work, run_dir, args.deadline)
            engine = Engine(
                state,
                run_dir,
                work,
                candidates,
                compiler,
                runner,
                deadline_s=args.deadline,
                say=say,
            )
            engine.run()
    finally:
        if state is not None:
            _report(state, run_dir, survivor_notes, kernel, config_name)
    return 0


def _report(
    state: MutationState, run_dir: Path, given: notes.Notes | None, kernel: str, config: str
) -> None:
    """The report and the scores, and the run in the history beside the run folder
    (a warning, never a changed exit code, when that fails: the history is an index)."""
    html, md = render(state, run_dir, given, kernel=kernel, config=config)
    _print_scores(state)
    say(f"report: {html}\n        {md}")
    history_mutate.record_or_warn(run_dir.parent, run_dir, say)


# --- pieces ---------------------------------------------------------------------------


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _suites(text: str | None, lab: LabConfig) -> list[str]:
    wanted = (
        [s.strip() for s in text.split(",") if s.strip()] if text else list(lab.defaults.suites)
    )
    unknown = [s for s in wanted if s not in lab.suites]
    if unknown or not wanted:
        raise UserError(
            f"unknown or no suites: {', '.join(unknown) or '(none)'} "
            f"(known: {', '.join(sorted(lab.suites))})",
            "pass --suites with names from suites: in lab.yaml",
        )
    return wanted


def _relative(file: str) -> str:
    path = PurePosixPath(file)
    if path.is_absolute() or ".." in path.parts or path.suffix != ".c":
        raise UserError(
            f"--file {file}: expected a .c file relative to the kernel tree",
            "e.g. --file virt/kvm/guest_memfd.c",
        )
    return str(path)


def _diff_text(
    args: argparse.Namespace, lab: LabConfig, kernel: str, src: SourceTree, files: list[str]
) -> str | None:
    if args.diff is not None:
        try:
            return str(args.diff.read_text())
        except OSError as exc:
            raise UserError(f"--diff {args.diff}: {exc}", "pass a unified diff file") from None
    if not args.series:
        return None
    spec = lab.kernels.get(kernel)
    if spec is None or spec.git is None or not src.base:
        raise UserError(
            f"--series needs a git kernel with a base: in lab.yaml ({kernel} has none)",
            "pass --diff FILE with the series' diff instead",
        )
    try:
        return _git_series_diff(src, spec.git.url, src.base, files)
    except RuntimeError as exc:
        raise InfraError(
            f"git diff {src.base[:12]} in {src.path} failed: {exc}",
            "check the base commit, or pass --diff FILE",
        ) from None


def _git_series_diff(src: SourceTree, url: str, base: str, files: list[str]) -> str:
    """The series' diff for files; the source stage fetches the ref with --depth=1, so
    the base commit may be missing: fetch just it (both commits are all git diff needs)."""
    try:
        return "".join(select.git_diff(str(src.path), base, f) for f in files)
    except RuntimeError:
        subprocess.run(
            ["git", "-C", str(src.path), "fetch", "--depth=1", url, base],
            capture_output=True,
            check=False,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
        )
        return "".join(select.git_diff(str(src.path), base, f) for f in files)


def _candidates(
    src: SourceTree, files: list[str], args: argparse.Namespace, diff_text: str | None
) -> tuple[list[mutants.Mutant], int]:
    """Every mutant of the selected lines, in the seeded sampling order; and how many
    lines were selected."""
    found: list[mutants.Mutant] = []
    selected = 0
    functions_seen: set[str] = set()
    for file in files:
        path = src.path / file
        if not path.is_file():
            raise UserError(f"{file} is not in {src.path}", "pass a path relative to the tree")
        text = path.read_text(errors="replace")
        lines = _selection(text, file, args, diff_text, functions_seen)
        selected += len(lines) if lines is not None else len(text.splitlines())
        found.extend(mutants.generate(file, text, lines))
    missing = sorted(set(args.function) - functions_seen)
    if missing:
        raise UserError(
            f"no definition of {', '.join(missing)} in {', '.join(files)}",
            "check the function name (static functions count too)",
        )
    if args.mutant:
        found = _only_ids(found, args.mutant)
    if not found:
        raise UserError("the selection holds no line to mutate", "widen --lines/--function/--diff")
    return mutants.shuffled(found, args.seed), selected


def _only_ids(found: list[mutants.Mutant], ids: list[str]) -> list[mutants.Mutant]:
    """The mutants named by --mutant; an id that names none is an error (a typo, or ids
    from another file or another universalmutator version)."""
    by_id = {m.id: m for m in found}
    unknown = sorted(set(ids) - set(by_id))
    if unknown:
        raise UserError(
            f"--mutant {', '.join(unknown)}: no such mutant in the selection",
            "take ids from `lab mutate ... --list` or a mutation report",
        )
    return [by_id[i] for i in sorted(set(ids))]


def _selection(
    text: str, file: str, args: argparse.Namespace, diff_text: str | None, seen: set[str]
) -> frozenset[int] | None:
    """The lines the filters allow (they intersect); None = the whole file."""
    lines: frozenset[int] | None = None

    def narrow(more: frozenset[int]) -> None:
        nonlocal lines
        lines = more if lines is None else lines & more

    if args.lines:
        try:
            narrow(select.parse_ranges(args.lines))
        except ValueError as exc:
            raise UserError(f"--lines: {exc}", "e.g. --lines 120-180,200") from None
    if args.function:
        spans = select.function_spans(text)
        here = [f for f in args.function if f in spans]
        seen.update(here)
        narrow(select.function_lines(text, here) if here else frozenset())
    if diff_text is not None:
        narrow(select.diff_lines(diff_text, file))
    return lines


def _filters(args: argparse.Namespace, src: SourceTree) -> dict[str, Any]:
    """The filters as the state and the report keep them (JSON types only)."""
    filters: dict[str, Any] = {}
    if args.lines:
        filters["lines"] = args.lines
    if args.function:
        filters["function"] = sorted(args.function)
    if args.diff is not None:
        filters["diff"] = hashlib.sha256(args.diff.read_bytes()).hexdigest()[:12]
    if args.series:
        filters["series_base"] = src.base
    if args.mutant:
        filters["mutants"] = sorted(set(args.mutant))
    return filters


def _default_run_dir(kernel: str, config_name: str, settings: dict[str, Any]) -> Path:
    """Named by the settings, so repeating a command finds (and resumes) its run."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    return REPO_ROOT / "results" / f"mutate-{names.slug(kernel, max_len=30)}-{config_name}-{digest}"


def _object_build(runner: LabRunner, work: Path, run_dir: Path, deadline_s: float) -> ObjectBuild:
    """Build the pristine copy (`lab build`), then compile single objects like it did."""
    say("[mutate] building the pristine copy (in full the first time, else incrementally)")
    built = runner.build(work, max(deadline_s, PRISTINE_BUILD_S), run_dir / "pristine-build")
    if not isinstance(built, Path):
        raise InfraError(
            f"the pristine copy did not build: {built.reason}",
            f"see {run_dir / 'pristine-build'}",
        )
    obj = load_build(built).build_dir / "obj"
    make = kernel_make(work, obj, os.cpu_count() or 1)
    return ObjectBuild(tuple(make), build_env(), obj)


def _print_list(found: list[mutants.Mutant], selected: int) -> None:
    print(f"{len(found)} mutants on {selected} selected lines, in sampling order:")
    for i, m in enumerate(found, 1):
        print(f"{i:5d} {m.id} {m.where}: {m.original.strip()}  ->  {m.mutated.strip()}")


def _print_scores(state: MutationState) -> None:
    for name, sc in scores(state).items():
        say(
            f"  {name:24} {sc.percent:>5}  killed {sc.killed}, survived {sc.survived}, "
            f"unknown {sc.unknown}"
        )
