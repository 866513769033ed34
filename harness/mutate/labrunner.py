"""The real MutantRunner: the lab's own CLI, `lab build` then `lab run`, as subprocesses.

    lab build --kernel <tree> --config C          -> the build's manifest.json (last line)
    lab run --kernel <label> --manifest M --suites S --results <attempt>/results
                                                  -> results/latest/summary.json

`lab build` takes a tree's path as --kernel and builds it incrementally in one build
folder per tree and config (so a mutant costs one object and a relink); `lab run
--manifest` boots that build and runs the suites; a `--kernel` beside --manifest only
names the result cell. Subprocesses give the per-mutant deadline teeth: the whole
process group gets SIGTERM (lab run stops its VM and writes its summary on SIGTERM),
then SIGKILL after a grace period. When the runner grows an in-process API after its
refactor, a second MutantRunner can call it directly; the engine does not change.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from harness import buildlog
from harness.mutate.classify import BOOT, KILLING
from harness.mutate.engine import Broken, InfraFailure, RunOutcome, SuiteResults
from harness.proc import kill_group
from harness.results import Outcome, TestResult, load_summary

# lab run needs this long after SIGTERM to stop QEMU and write its report.
GRACE_S = 60.0
# What lab run's boot stage says when the console showed a crash (harness/vm.py).
BOOT_CRASH = "crashed while booting"
_FULL_LOG = re.compile(r"read the full log: (\S+)")


class LabRunner:
    def __init__(
        self,
        *,
        config: str,
        out_dir: Path,
        lab_file: Path | None = None,
        lab_argv: Sequence[str] = (sys.executable, "-m", "harness.cli"),
        grace_s: float = GRACE_S,
        suite_timeout_s: int | None = None,
    ) -> None:
        self.config, self.out_dir = config, out_dir
        self.lab_argv = [*lab_argv, *(["--lab", str(lab_file)] if lab_file else [])]
        self.grace_s = grace_s
        # Passed on as `lab run --suite-timeout`: a hung guest costs this, not lab.yaml's.
        self.suite_timeout_s = suite_timeout_s

    # --- the two lab commands -----------------------------------------------------------

    def build(self, tree: Path, timeout_s: float, folder: Path) -> Path | Broken | InfraFailure:
        """`lab build` of the tree as it is now: the manifest's path, or why not."""
        folder.mkdir(parents=True, exist_ok=True)
        out, err = folder / "build.out", folder / "build.err"
        argv = [*self.lab_argv, "build", "--kernel", str(tree), "--config", self.config]
        code = self.call(argv, out, err, timeout_s)
        if code is None:
            return InfraFailure(f"lab build outlived the deadline ({timeout_s:.0f}s)", "deadline")
        out_text, err_text = _read(out), _read(err)
        if code == 0:
            lines = [ln for ln in out_text.splitlines() if ln.strip()]
            manifest = Path(lines[-1].strip()) if lines else None
            if manifest is None or not manifest.is_file():
                return InfraFailure(f"lab build printed no manifest path (see {out})", "build")
            return manifest
        # Whose fault: the make log lab build names (else its own output) decides.
        m = _FULL_LOG.search(err_text)
        failure = (
            buildlog.classify_file(Path(m.group(1)))
            if m
            else buildlog.classify(out_text + "\n" + err_text)
        )
        # lab build exits 1 when the tree does not compile (2 before it told them apart).
        if code in (1, 2) and failure.tree:
            return Broken(failure.reason)
        return InfraFailure(f"lab build exit {code}: {_lab_error(err_text)}", "build")

    def run(
        self, tree: Path, suites: Sequence[str], deadline_s: float, *, label: str
    ) -> RunOutcome:
        folder = self._attempt_dir(label)
        start = time.monotonic()
        built = self.build(tree, deadline_s, folder)
        if not isinstance(built, Path):
            self._timing(folder, label, start, None)
            return built
        left = deadline_s - (time.monotonic() - start)
        if left <= 0:
            return InfraFailure(f"the build used up the deadline ({deadline_s:.0f}s)", "deadline")
        results = folder / "results"
        argv = [
            *self.lab_argv,
            "run",
            "--kernel",
            f"mutant-{label}",
            "--manifest",
            str(built),
            "--suites",
            ",".join(suites),
            "--results",
            str(results),
        ]
        if self.suite_timeout_s is not None:
            argv += ["--suite-timeout", str(self.suite_timeout_s)]
        code = self.call(argv, folder / "run.out", folder / "run.err", left)
        summary = results / "latest"
        self._timing(folder, label, start, summary)
        if code is None:
            partial = _decided_before_deadline(summary)
            if partial is not None:
                return partial
            return InfraFailure(f"lab run outlived the deadline ({deadline_s:.0f}s)", "deadline")
        if not (summary / "summary.json").is_file():
            err = _lab_error(_read(folder / "run.err"))
            return InfraFailure(f"lab run exit {code} left no summary: {err}", "run")
        return outcome_from_summary(summary)

    # --- processes ----------------------------------------------------------------------

    def call(self, argv: Sequence[str], out: Path, err: Path, timeout_s: float) -> int | None:
        """Run argv with its output in files; None when it outlived timeout_s.

        Its own session: Ctrl-C on the terminal reaches only `lab mutate`, which then
        stops the child the orderly way (SIGTERM, grace, SIGKILL) and restores the tree.
        """
        with out.open("wb") as o, err.open("wb") as e:
            proc = subprocess.Popen(
                list(argv),
                stdout=o,
                stderr=e,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                return proc.wait(timeout=max(timeout_s, 1.0))
            except subprocess.TimeoutExpired:
                self.stop(proc)
                return None
            except BaseException:
                self.stop(proc)
                raise

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=self.grace_s)
        except subprocess.TimeoutExpired:
            kill_group(proc)

    # --- bookkeeping --------------------------------------------------------------------

    def _attempt_dir(self, label: str) -> Path:
        base = self.out_dir / label
        n = 1
        while (base / str(n)).exists():
            n += 1
        path = base / str(n)
        path.mkdir(parents=True)
        return path

    def _timing(self, folder: Path, label: str, start: float, summary: Path | None) -> None:
        """One line per attempt in timings.jsonl: where a mutant's wall time goes."""
        entry: dict[str, object] = {"label": label, "seconds": round(time.monotonic() - start, 1)}
        if summary is not None and (summary / "summary.json").is_file():
            stages = json.loads((summary / "summary.json").read_text()).get("stages", {})
            entry["stages"] = {k: v.get("seconds") for k, v in stages.items()}
        with (self.out_dir / "timings.jsonl").open("a") as sink:
            sink.write(json.dumps(entry) + "\n")


def outcome_from_summary(run_dir: Path) -> RunOutcome:
    """A lab run's summary -> results per suite, or why there are none."""
    record = load_summary(run_dir)
    by_suite: dict[str, list[TestResult]] = {}
    for r in record.results:
        by_suite.setdefault(r.suite, []).append(r)
    boot = record.stages.get("boot", {})
    if boot.get("status") == "failed":
        error = str(boot.get("error", ""))
        if BOOT_CRASH in error or any(BOOT_CRASH in e for e in record.errors):
            # A crash on the console while booting is the kernel's, not the machine's.
            crash = TestResult(BOOT, "boot", Outcome.CRASH, error or BOOT_CRASH)
            by_suite.setdefault(BOOT, []).append(crash)
            return by_suite
        return InfraFailure(f"the VM did not come up: {error}", "boot")
    failed = [n for n, s in record.stages.items() if s.get("status") == "failed"]
    if not by_suite and failed:
        error = record.stages[failed[0]].get("error", "")
        return InfraFailure(f"{failed[0]} failed: {error}", failed[0])
    return by_suite


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _lab_error(text: str) -> str:
    """The `lab: ...` line the CLI prints for an expected failure, else the last line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    said = [ln for ln in lines if ln.startswith("lab: ")]
    return (said or lines or ["(no output)"])[-1][:300]


def _decided_before_deadline(summary: Path) -> SuiteResults | None:
    """What a run cut short by the deadline already decided, or None.

    lab run writes its summary on SIGTERM. A mutant that wedges the guest times out one
    test after another (each kselftest waits out its own timeout), so the deadline
    often ends a run in which some tests already failed or timed out: those kills are
    verdicts, and throwing them away would make the mutant "unknown" after a retry that
    hangs the same way. The suites with nothing decided stay undecided (their rows
    missing), so the engine retries just those.
    """
    if not (summary / "summary.json").is_file():
        return None
    found = outcome_from_summary(summary)
    if not isinstance(found, Mapping):
        return None
    killing = any(r.outcome in KILLING for rows in found.values() for r in rows)
    return found if killing else None
