"""The nightly matrix: kernels x configs x targets, each cell one `lab run`.

Builds are shared between cells for free: the build stage caches by (source commit,
config hash), so two cells on the same kernel and config compile once. Each cell
writes its own run folder under the matrix folder and is recorded in the results
root's history; the matrix adds an index (matrix.json, matrix.md, matrix.html) that
leads with what changed since the previous night (regressions flagged, flaky tests
with their pass rate: harness/nightly.py), draws each cell's last nights as a strip
with its test pass rate over time, and lists every run with, under --repeat, a pass
rate per cell. With --ab BASE each other cell is also judged against BASE's run of the
same config and target (harness/ab.py).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from markupsafe import Markup

from harness import ab, history_report, junit, names, nightly, report, runner
from harness.config import LabConfig
from harness.errors import LabError, UserError
from harness.results import EXIT_INFRA, EXIT_USER, RunRecord, load_summary, verdict_text

# Exit code precedence across cells: bad input first (nothing meaningful ran), then
# infrastructure trouble (results are missing), then test failures.
_PRECEDENCE = (EXIT_USER, 2, 1, 0)


@dataclass(frozen=True)
class Cell:
    kernel: str
    config: str
    target: str

    @property
    def name(self) -> str:
        return f"{self.kernel}-{self.config}-{self.target}"


@dataclass(frozen=True)
class CellRun:
    cell: str
    attempt: int
    exit_code: int
    verdict: str
    folder: str


def cells(lab: LabConfig, matrix: str) -> tuple[list[Cell], tuple[str, ...]]:
    """The cells of a named matrix and the suites they run."""
    if matrix not in lab.matrix:
        known = ", ".join(sorted(lab.matrix)) or "none"
        raise UserError(f"unknown matrix {matrix!r} (known: {known})", "name one from matrix:")
    spec = lab.matrix[matrix]
    hosts = [t for t in spec.targets if t != "qemu"]
    if hosts:
        # Bare-metal cells need a host stage (deploy a kernel with kexec, run over the
        # user's SSH config) that the lab does not have yet: refuse rather than skip.
        raise UserError(
            f"matrix.{matrix}.targets: bare-metal targets {', '.join(hosts)} cannot run yet "
            "(the lab has no host deploy stage)",
            "use targets: [qemu] for now",
        )
    grid = itertools.product(spec.kernels, spec.configs, spec.targets)
    suites = tuple(spec.suites or lab.defaults.suites)
    return [Cell(k, c, t) for k, c, t in grid], suites


@dataclass(frozen=True)
class CellEntry:
    """One row of `lab matrix NAME --list`: everything a CI job needs to run one cell.

    Cells with the same build_key (same kernel and config) share one build: a CI builds
    once per key and hands the build to each of its cells (`lab run --manifest`).
    """

    cell: str
    kernel: str
    config: str
    target: str
    build_key: str
    suites: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "suites": list(self.suites)}


def build_key(kernel_label: str, config: str) -> str:
    return names.slug(f"{kernel_label}-{config}")


def kernel_label(lab: LabConfig, kernel: str) -> str:
    """A lab.yaml kernel name as it is; a path by its folder's name (cell names read well)."""
    if kernel in lab.kernels:
        return kernel
    return names.slug(Path(kernel).name or kernel)


def cell_list(
    lab: LabConfig, matrix: str, kernel: str | None = None, label: str | None = None
) -> list[CellEntry]:
    """The cells of matrix.NAME, one entry each; with `kernel` (e.g. the CI's checkout),
    that one kernel replaces the matrix's kernels (configs x targets stay)."""
    grid, suites = cells(lab, matrix)
    if label is not None and not names.is_safe_name(label):
        raise UserError(
            f"--kernel-label {label!r}: not a safe name", "use letters, digits, '.', '_', '-'"
        )
    if kernel is None:
        pairs = [(c, c.kernel) for c in grid]
    else:
        name = label or kernel_label(lab, kernel)
        seen = dict.fromkeys((c.config, c.target) for c in grid)
        pairs = [(Cell(name, cfg, tgt), kernel) for cfg, tgt in seen]
    return [
        CellEntry(c.name, k, c.config, c.target, build_key(c.kernel, c.config), suites)
        for c, k in pairs
    ]


def builds_of(entries: list[CellEntry]) -> list[dict[str, str]]:
    """One entry per distinct build (kernel, config), in first-seen order."""
    out: dict[str, dict[str, str]] = {}
    for e in entries:
        entry = {"build_key": e.build_key, "kernel": e.kernel, "config": e.config}
        out.setdefault(e.build_key, entry)
    return list(out.values())


def combined_exit(codes: list[int]) -> int:
    for code in _PRECEDENCE:
        if code in codes:
            return code
    return max(codes, default=0)


RunCell = Callable[[LabConfig, runner.RunRequest], int]


@dataclass(frozen=True)
class AbRow:
    """One series cell's A/B against its base (matrix --ab)."""

    cell: str
    base_run: str
    headline: str
    exit_code: int


def _ordered(grid: list[Cell], base: str | None) -> list[Cell]:
    """With --ab BASE, BASE's own cells first: they are the other cells' base runs."""
    if not base:
        return grid
    return [c for c in grid if c.kernel == base] + [c for c in grid if c.kernel != base]


def run_matrix(
    lab: LabConfig,
    matrix: str,
    results_root: Path,
    repeat: int = 1,
    run_cell: RunCell | None = None,
    *,
    ab_base: str | None = None,
    nights: int = nightly.DEFAULT_NIGHTS,
    warn: Callable[[str], None] = lambda text: print(text, file=sys.stderr),
) -> int:
    """Run every cell (repeat times), write the index as cells finish, return the exit.

    Each run is recorded in results_root's history (the runner does it); the index
    draws each cell's last `nights` runs from there. With ab_base (a kernel, or "" for
    each kernel's own base: commit), every other cell is compared with the base kernel's
    run of the same config and target, and counts by that comparison (harness.ab).
    """
    if repeat < 1:
        raise UserError(f"--repeat {repeat}: must be at least 1", "pass --repeat 1 or more")
    if nights < 1:
        raise UserError(f"--nights {nights}: must be at least 1", "pass --nights 1 or more")
    grid, suites = cells(lab, matrix)
    grid = _ordered(grid, ab_base)
    run_one = run_cell or (lambda lab_, req: runner.run(lab_, req))
    folder = _new_folder(results_root, f"matrix-{matrix}-{dt.datetime.now():%Y%m%d-%H%M%S}")
    done: list[CellRun] = []
    ab_rows: list[AbRow] = []
    # (base kernel, config, target) -> (its run folder, its exit code), once per matrix.
    base_runs: dict[tuple[str, str, str], tuple[Path, int]] = {}
    counted: list[int] = []

    def request(kernel: str, config: str, target: str, run_id: str) -> runner.RunRequest:
        return runner.RunRequest(
            kernel=kernel,
            config=config,
            suites=suites,
            results_root=folder,
            run_id=run_id,
            target=target,
            history_root=results_root,
        )

    for cell, attempt in itertools.product(grid, range(1, repeat + 1)):
        run_id = cell.name if repeat == 1 else f"{cell.name}-{attempt}"
        code = run_one(lab, request(cell.kernel, cell.config, cell.target, run_id))
        done.append(CellRun(cell.name, attempt, code, _verdict(folder / run_id, code), run_id))
        if ab_base is None:
            counted.append(code)
        elif cell.kernel == ab_base:
            base_runs[(cell.kernel, cell.config, cell.target)] = (folder / run_id, code)
            # The base's own test failures are every series cell's pre-existing ones.
            counted.append(code if code != 1 else 0)
        else:
            base = ab.resolve_base(lab, cell.kernel, ab_base)
            key = (base.kernel, cell.config, cell.target)
            if key not in base_runs:
                base_id = f"{names.slug(base.kernel)}-{cell.config}-{cell.target}-base"
                base_code = run_one(
                    base.lab, request(base.kernel, cell.config, cell.target, base_id)
                )
                base_runs[key] = (folder / base_id, base_code)
                counted.append(base_code if base_code != 1 else 0)
            base_dir, base_code = base_runs[key]
            v = ab.judge(results_root, base_dir, folder / run_id, base_code, code, base.label)
            if v is None:
                counted.append(max(code, base_code, EXIT_INFRA))
                ab_rows.append(
                    AbRow(run_id, base_dir.name, "no comparison: a run left no summary", EXIT_INFRA)
                )
            else:
                ab.write_ab(folder / run_id, base_dir, base.label, v)
                counted.append(v.exit_code)
                ab_rows.append(AbRow(run_id, base_dir.name, v.headline, v.exit_code))
        view = _nightly(results_root, done, folder, nights, warn)
        write_index(folder, matrix, done, view, ab_rows, exit_code=combined_exit(counted))
    return combined_exit(counted)


def _new_folder(root: Path, name: str) -> Path:
    """root/name, or root/name-2, -3... when a matrix started in the same second."""
    root.mkdir(parents=True, exist_ok=True)
    for n in itertools.count(1):
        folder = root / (name if n == 1 else f"{name}-{n}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise AssertionError("unreachable")


def _nightly(
    results_root: Path,
    done: list[CellRun],
    folder: Path,
    nights: int,
    warn: Callable[[str], None],
) -> list[nightly.CellNight] | None:
    tonight: dict[str, list[Path]] = {}
    for r in done:
        tonight.setdefault(r.cell, []).append(folder / r.folder)
    try:
        return nightly.view(results_root, tonight, nights)
    except LabError as exc:
        warn(f"[matrix] warning: no nightly view from the history: {exc.message}")
        return None


def _verdict(run_folder: Path, code: int) -> str:
    try:
        summary = json.loads((run_folder / "summary.json").read_text())
        return str(summary["verdict"])
    except (OSError, ValueError, KeyError):
        return f"no summary (exit {code})"


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


# --- merging cells that ran elsewhere (CI jobs) ----------------------------------------


def find_runs(dirs: list[Path]) -> list[Path]:
    """The run folders (with summary.json) given, or found under the folders given.

    Symbolic links (results/latest) are never followed, so a run is counted once.
    """
    found: dict[Path, None] = {}
    for top in dirs:
        if not top.is_dir():
            raise UserError(f"{top}: no such folder", "pass run folders or folders holding them")
        if (top / "summary.json").is_file():
            found[top.resolve()] = None
            continue
        for root, subdirs, files in os.walk(top):
            if "summary.json" in files:
                found[Path(root).resolve()] = None
                subdirs.clear()  # a run's own cell folders hold no runs
            else:
                subdirs.sort()
    return list(found)


def _load(run: Path) -> RunRecord:
    try:
        return load_summary(run)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise UserError(
            f"{run / 'summary.json'}: not a gmemlab summary ({exc})", "pass lab run folders"
        ) from None


def _cell_of(run: Path, record: RunRecord, expected: set[str]) -> str:
    """A CI puts each cell's runs under a folder named after the cell (results/<cell>/):
    that name wins, so a build shared under another kernel name still reports as its cell."""
    for parent in (run.parent, run.parent.parent):
        if parent.name in expected:
            return parent.name
    return record.cell


def merge_report(
    dirs: list[Path], out: Path, name: str, expected: list[CellEntry] | None = None
) -> int:
    """matrix.json, matrix.md and one junit.xml in `out` from cell run folders made
    elsewhere (one CI job per cell); expected cells without a run count as missing.
    Returns the matrix's exit code (the worst cell's)."""
    want = [e.cell for e in expected or []]
    runs = [(path, _load(path)) for path in find_runs(dirs)]
    runs.sort(key=lambda item: (_cell_of(item[0], item[1], set(want)), item[1].started))
    out.mkdir(parents=True, exist_ok=True)
    done: list[CellRun] = []
    junits: list[tuple[str, Path]] = []
    for path, record in runs:
        cell = _cell_of(path, record, set(want))
        attempt = 1 + sum(1 for r in done if r.cell == cell)
        folder = os.path.relpath(path, out.resolve())
        done.append(CellRun(cell, attempt, record.exit_code, record.verdict, folder))
        junits.append((cell, path / "junit.xml"))
    ran = {r.cell for r in done}
    missing = [c for c in want if c not in ran]
    for cell in missing:
        verdict = f"{verdict_text(EXIT_INFRA, True)}: no results (its job did not finish)"
        done.append(CellRun(cell, 1, EXIT_INFRA, verdict, "-"))
    write_index(out, name, done)
    junit.merge(junits, out / "junit.xml", name=f"gmemlab matrix {name}", missing=missing)
    return combined_exit([r.exit_code for r in done])
