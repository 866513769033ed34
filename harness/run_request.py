"""A run's request: what `lab run` was asked for (kernel, config, suites, target, where
results go), by value. The runner and its stages take it; it names the cell's folder and
says how to run the same cell again (the reproducer)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness import names
from harness.paths import REPO_ROOT


@dataclass(frozen=True)
class RunRequest:
    kernel: str  # a lab.yaml kernel name or the path of a kernel tree
    config: str
    suites: tuple[str, ...]
    results_root: Path = REPO_ROOT / "results"
    # Reuse a finished build instead of building (its manifest names the selftests).
    manifest: Path | None = None
    bzimage: Path | None = None
    run_id: str | None = None
    # "qemu" (the lab VM) or a name from lab.yaml's hosts: (harness/run_host.py).
    target: str = "qemu"
    # Where history.sqlite lives (a matrix or bisect puts its runs in a subfolder of the
    # results root, but records them in the root's history); None: results_root.
    history_root: Path | None = None
    # A host target held by another run: wait this long for its lock (0: fail at once).
    wait_s: float = 0.0
    # `--mbox FILE --base NAME`: how to make the kernel again when no build is reused.
    series_args: tuple[str, ...] = ()

    @property
    def cell(self) -> str:
        """The cell's folder name: only safe characters, whatever --kernel was."""
        return names.cell_name(self.kernel, self.config, self.target)

    def reproducer(self, manifest: Path | None) -> list[str]:
        argv = [
            str(REPO_ROOT / ".venv" / "bin" / "lab"),
            "run",
            "--kernel",
            self.kernel,
            "--config",
            self.config,
            "--suites",
            ",".join(self.suites),
        ]
        if manifest is not None:
            argv += ["--manifest", str(manifest)]
        elif self.series_args:
            argv = [*argv[:2], *argv[4:], *self.series_args]  # the series, not its name
        if self.bzimage is not None:
            argv += ["--bzimage", str(self.bzimage)]
        if self.target != "qemu":
            argv += ["--target", self.target]
        return argv
