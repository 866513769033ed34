"""The mutation run: prune every sampled mutant, run the pristine kernel, run each mutant.

One mutant at a time, in the one copy of the tree: apply it, build and test it through
a MutantRunner, restore the pristine file (always: `Workspace.applied` is a context
manager), record the verdicts, save state.json. Every step saves, so a restart (same
command, same run folder) continues with the first unfinished mutant.

The runner is a Protocol so the engine is tested with a fake and so the step that
builds, boots and runs the suites can move (today: `lab build` + `lab run` as
subprocesses, see labrunner.py; later the runner's in-process API).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from harness.errors import InfraError, UserError
from harness.mutate import state as st
from harness.mutate.classify import (
    BOOT,
    Classified,
    Verdict,
    baseline_of,
    classify_boot,
    classify_suite,
)
from harness.mutate.compile import ObjectBuild
from harness.mutate.mutants import Mutant
from harness.mutate.state import MutantRecord, MutationState, Status, Workspace
from harness.results import Outcome, TestResult

# A mutant's suites are tried at most this often: once, and once more for the suites
# whose first results were infrastructure trouble.
ATTEMPTS = 2
DEFAULT_DEADLINE_S = 3600.0
BASELINE = "baseline"


@dataclass(frozen=True)
class InfraFailure:
    """The pipeline failed for reasons that say nothing about the mutant."""

    reason: str
    stage: str = ""  # build | boot | run | deadline


@dataclass(frozen=True)
class Broken:
    """The mutated tree does not build (a link or objtool error past the object)."""

    reason: str


SuiteResults = Mapping[str, Sequence[TestResult]]
RunOutcome = SuiteResults | InfraFailure | Broken


class MutantRunner(Protocol):
    """Build the tree as it is now, boot it, run `suites`, within deadline_s seconds.

    Returns the results per suite (the runner's "boot" results, a WARN/BUG while
    booting, under BOOT), InfraFailure when no verdict can be had, or Broken when the
    tree does not build. `label` names the attempt's results folder.
    """

    def run(
        self, tree: Path, suites: Sequence[str], deadline_s: float, *, label: str
    ) -> RunOutcome: ...


Say = Callable[[str], None]


def open_state(
    run_dir: Path,
    source: Path,
    files: Sequence[str],
    suites: Sequence[str],
    *,
    seed: int,
    sample: int | None,
    filters: dict[str, Any],
    candidates: Sequence[Mutant],
) -> MutationState:
    """The run folder's state: resumed when it is there (and describes the same run),
    else new, with the pristine files kept beside it."""
    found = st.load(run_dir)
    if found is not None:
        asked = (sorted(files), list(suites), seed, sample, filters)
        had = (sorted(found.files), found.suites, found.seed, found.sample, found.filters)
        if asked != had:
            raise UserError(
                f"{run_dir} holds a mutation run with other settings "
                f"(files, suites, seed, sample, filters: {had})",
                "repeat that run's arguments to resume it, or pass another --results",
            )
        return found
    run_dir.mkdir(parents=True, exist_ok=True)
    state = MutationState(
        tree=str(source),
        files={f: st.sha256_file(source / f) for f in files},
        suites=list(suites),
        seed=seed,
        sample=sample,
        filters=filters,
        order=[m.id for m in candidates],
    )
    Workspace(source, run_dir, state).keep_pristine(source)
    st.save(state, run_dir)
    return state


class Engine:
    def __init__(
        self,
        state: MutationState,
        run_dir: Path,
        tree: Path,
        candidates: Sequence[Mutant],
        compiler: ObjectBuild,
        runner: MutantRunner,
        *,
        deadline_s: float = DEFAULT_DEADLINE_S,
        say: Say = print,
    ) -> None:
        if [m.id for m in candidates] != state.order:
            raise UserError(
                f"the mutants generated now differ from those of the run in {run_dir}",
                "the file or the filters changed: start a new run with another --results",
            )
        self.state, self.run_dir, self.tree = state, run_dir, tree
        self.candidates = candidates
        self.compiler, self.runner = compiler, runner
        self.deadline_s, self.say = deadline_s, say
        self.ws = Workspace(tree, run_dir, state)

    def save(self) -> None:
        st.save(self.state, self.run_dir)

    def run(self) -> MutationState:
        """All of it; the tree is pristine again when this returns or raises."""
        start = time.monotonic()
        restored = self.ws.ensure_pristine()
        for file in restored:
            self.say(f"[mutate] {file}: restored the pristine file (a previous run died)")
        try:
            self.prune()
            self.baseline()
            self.run_mutants()
            self.state.complete = True
        finally:
            self.ws.ensure_pristine()
            self.state.wall_s = round(self.state.wall_s + time.monotonic() - start, 1)
            self.save()
        return self.state

    # --- pruning ----------------------------------------------------------------------

    def pristine_objects(self) -> None:
        """Compile each pristine file's object twice: its hash, and whether TCE can work."""
        for file in self.state.files:
            if file in self.state.objects:
                continue
            log = self.run_dir / "compile" / f"pristine-{file.replace('/', '_')}.log"
            hashes = []
            for _ in range(2):
                done = self.compiler.compile(file, log)
                if not done.ok:
                    raise InfraError(
                        f"the pristine {file} does not compile in the build folder: "
                        f"{done.reason}\n{done.excerpt}",
                        f"see {log}",
                    )
                assert done.sha256 is not None
                hashes.append(done.sha256)
            self.state.objects[file] = hashes[0]
            self.state.reproducible[file] = hashes[0] == hashes[1]
            if hashes[0] != hashes[1]:
                self.say(
                    f"[mutate] {file}: two compiles of the pristine file differ; "
                    "equivalence (TCE) pruning is off for it"
                )
            self.save()

    def prune(self) -> None:
        """Walk the candidates in order until `sample` of them compile to a new object."""
        self.pristine_objects()
        want = self.state.sample
        for m in self.candidates:
            usable = len(self.state.with_status(Status.READY, Status.DONE))
            if want is not None and usable >= want:
                break
            rec = self.state.records.get(m.id)
            if rec is not None and rec.status is not Status.PENDING:
                continue
            if rec is None:
                rec = self.state.records[m.id] = MutantRecord(m)
            self.prune_one(rec)
        counts = {s.value: len(self.state.with_status(s)) for s in Status}
        self.say(
            "[mutate] pruned: "
            + ", ".join(f"{n} {k}" for k, n in counts.items() if n)
            + (f" (wanted {want} to run)" if want is not None else "")
        )

    def prune_one(self, rec: MutantRecord) -> None:
        m = rec.mutant
        log = self.run_dir / "compile" / f"{m.id}.log"
        with self.ws.applied(m):
            done = self.compiler.compile(m.file, log)
        # The mutant's object must not outlive the mutant (make judges by mtime).
        self.compiler.forget(m.file)
        rec.compile_s = round(done.seconds, 2)
        rec.object_sha256 = done.sha256
        twin = next(
            (
                r
                for r in self.state.with_status(Status.READY, Status.DONE)
                if r.object_sha256 == done.sha256 and r.mutant.file == m.file
            ),
            None,
        )
        if not done.ok:
            if not done.code_error:
                self.save()
                raise InfraError(f"compiling mutant {m.id}: {done.reason}", f"see {log}")
            rec.status, rec.reason = Status.STILLBORN, done.excerpt or done.reason
        elif not self.state.reproducible.get(m.file):
            rec.status = Status.READY  # no object comparison can be trusted for this file
        elif done.sha256 == self.state.objects[m.file]:
            rec.status = Status.EQUIVALENT
            rec.reason = "object file byte-identical to the pristine one (TCE)"
        elif twin is not None:
            # The same kernel as a mutant already in the sample: running it again would
            # count one bug twice (TCE's duplicate mutants).
            rec.status = Status.DUPLICATE
            rec.reason = f"object file byte-identical to mutant {twin.mutant.id}'s"
        else:
            rec.status = Status.READY
        self.say(f"[mutate] {m.id} {m.where}: {rec.status.value} ({done.seconds:.1f}s)")
        self.save()

    # --- running ----------------------------------------------------------------------

    def baseline(self) -> None:
        """The pristine tree through the same runner: the reference for every verdict."""
        if self.state.baseline is not None or not self.state.with_status(Status.READY):
            return
        self.say("[mutate] baseline: the pristine kernel through the suites")
        start = time.monotonic()
        suites = list(self.state.suites)
        outcome: RunOutcome = InfraFailure("not run")
        for _attempt in range(ATTEMPTS):
            outcome = self.runner.run(self.tree, suites, self.deadline_s, label=BASELINE)
            if isinstance(outcome, Broken):
                raise InfraError(f"the pristine tree does not build: {outcome.reason}")
            if isinstance(outcome, InfraFailure):
                continue
            empty = [s for s in suites if not outcome.get(s)]
            if not empty:
                break
            outcome = InfraFailure(f"no results for {', '.join(empty)}")
        if isinstance(outcome, InfraFailure | Broken):
            raise InfraError(
                f"the pristine kernel did not run through the suites: {outcome.reason}",
                "fix the lab (lab run on this kernel must work) before mutating",
            )
        baseline = {s: baseline_of(outcome.get(s, ())) for s in [*suites, BOOT]}
        self.state.baseline = {s: {t: o.value for t, o in r.items()} for s, r in baseline.items()}
        self.state.baseline_s = round(time.monotonic() - start, 1)
        self.save()

    def baseline_for(self, suite: str) -> dict[str, Outcome] | None:
        if self.state.baseline is None:
            return None
        return {t: Outcome(o) for t, o in self.state.baseline.get(suite, {}).items()}

    def run_mutants(self) -> None:
        ready = self.state.with_status(Status.READY)
        for i, rec in enumerate(ready, 1):
            self.say(f"[mutate] {i}/{len(ready)} {rec.mutant.id} {rec.mutant.where}")
            self.run_one(rec)

    def run_one(self, rec: MutantRecord) -> None:
        """Run the undecided suites; infrastructure trouble once more; then unknown."""
        m = rec.mutant
        while rec.attempts < ATTEMPTS:
            pending = [s for s in self.state.suites if s not in rec.verdicts]
            if not pending:
                break
            start = time.monotonic()
            with self.ws.applied(m):
                outcome = self.runner.run(
                    self.tree, pending, self.deadline_s, label=f"{m.id}-{rec.attempts + 1}"
                )
            rec.run_s = round(rec.run_s + time.monotonic() - start, 1)
            rec.attempts += 1
            if isinstance(outcome, Broken):
                rec.status, rec.reason = (
                    Status.STILLBORN,
                    f"the kernel does not build: {outcome.reason}",
                )
                rec.verdicts.clear()
                rec.why.clear()
                self.save()
                self.say(f"[mutate] {m.id}: stillborn ({outcome.reason})")
                return
            if isinstance(outcome, InfraFailure):
                for s in pending:
                    rec.why[s] = f"{outcome.stage or 'run'}: {outcome.reason}"
            else:
                self.record(rec, pending, outcome)
            if rec.verdicts.get(BOOT) is Verdict.KILLED:
                # The kernel crashed while booting: every retry would too, and no suite
                # got to run, so none is credited (the matrix shows the boot kill).
                for s in pending:
                    rec.verdicts.setdefault(s, Verdict.UNKNOWN)
            self.save()
        for s in self.state.suites:
            rec.verdicts.setdefault(s, Verdict.UNKNOWN)
        rec.status = Status.DONE
        self.save()
        self.say(
            f"[mutate] {m.id}: "
            + ", ".join(f"{s} {v.value}" for s, v in rec.verdicts.items())
            + f" ({rec.run_s:.0f}s)"
        )

    def record(self, rec: MutantRecord, pending: Sequence[str], outcome: SuiteResults) -> None:
        for s in pending:
            found: Classified = classify_suite(list(outcome.get(s, ())), self.baseline_for(s))
            rec.why[s] = found.why
            if found.verdict is not Verdict.INFRA:
                rec.verdicts[s] = found.verdict
        boot = classify_boot(list(outcome.get(BOOT, ())), self.baseline_for(BOOT))
        if boot.verdict is Verdict.KILLED:
            rec.verdicts[BOOT] = Verdict.KILLED
            rec.why[BOOT] = boot.why
