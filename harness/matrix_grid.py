"""The cells of a named matrix: its kernel x config x target grid and the `--list` entries."""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from pathlib import Path

from harness import names
from harness.config import LabConfig
from harness.errors import UserError


@dataclass(frozen=True)
class Cell:
    kernel: str
    config: str
    target: str

    @property
    def name(self) -> str:
        return names.cell_name(self.kernel, self.config, self.target)


def cells(lab: LabConfig, matrix: str) -> tuple[list[Cell], tuple[str, ...]]:
    """The cells of a named matrix and the suites they run. Every cell of the grid runs:
    a host cell whose config needs what the host lacks skips its suites with the host
    probe's reason (harness/run_host.py), it is never left out silently."""
    if matrix not in lab.matrix:
        known = ", ".join(sorted(lab.matrix)) or "none"
        raise UserError(f"unknown matrix {matrix!r} (known: {known})", "name one from matrix:")
    spec = lab.matrix[matrix]
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
