"""lab mutate's engine on a tiny tree compiled by real gcc and a fake runner: pruning
(stillborn, TCE-equivalent, duplicate), the baseline, verdicts with one retry, and
resuming after a kill with the pristine file restored."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.errors import InfraError, UserError
from harness.mutate import state as st
from harness.mutate.classify import Verdict
from harness.mutate.compile import ObjectBuild
from harness.mutate.engine import Engine, open_state
from harness.mutate.mutants import Mutant, generate, shuffled
from harness.mutate.state import Status
from harness.results import Outcome
from tests.unit.mutate_fakes import FILE, SOURCE, FakeRunner, make_c_tree, object_build

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc and make")

SUITES = ["gmem-ioctl", "kselftests"]
# Hand-picked mutants of SOURCE (their mutated lines), one of each kind.
CHANGES = "\tif (pages >= 16)"  # a real change
EQUIVALENT = "\textra = extra - 0;"  # compiles to the pristine object
STILLBORN = "\t\treturn pages - 1; continue;"  # continue outside a loop
TWIN = "\tif (pages > (16-1))"  # the same object as CHANGES
RETURNS = "\treturn pages * extra;"  # another real change


def pick(*lines: str) -> list[Mutant]:
    every = {m.mutated: m for m in generate(FILE, SOURCE)}
    return [every[line] for line in lines]


class Setup:
    def __init__(self, tmp: Path, candidates: list[Mutant], sample: int | None = None) -> None:
        self.source = make_c_tree(tmp / "source")
        self.tree = make_c_tree(tmp / "work")
        self.run_dir = tmp / "run"
        self.compiler: ObjectBuild = object_build(self.tree, tmp / "obj")
        self.candidates = candidates
        self.sample = sample

    def engine(self, runner: FakeRunner, say: list[str] | None = None) -> Engine:
        state = open_state(
            self.run_dir,
            self.source,
            [FILE],
            SUITES,
            seed=1,
            sample=self.sample,
            filters={},
            candidates=self.candidates,
        )
        sink = say if say is not None else []
        return Engine(
            state,
            self.run_dir,
            self.tree,
            self.candidates,
            self.compiler,
            runner,
            deadline_s=60,
            say=sink.append,
        )

    def live(self) -> str:
        return (self.tree / FILE).read_text()


def by_line(state: st.MutationState) -> dict[str, st.MutantRecord]:
    return {r.mutant.mutated: r for r in state.walked()}


def test_pruning_stillborn_equivalent_duplicate_and_ready(tmp_path: Path) -> None:
    s = Setup(tmp_path, pick(CHANGES, EQUIVALENT, STILLBORN, TWIN))
    runner = FakeRunner(s.tree)
    eng = s.engine(runner)
    eng.prune()
    recs = by_line(eng.state)
    assert recs[CHANGES].status is Status.READY
    assert recs[EQUIVALENT].status is Status.EQUIVALENT
    assert "TCE" in recs[EQUIVALENT].reason
    assert recs[STILLBORN].status is Status.STILLBORN
    assert "continue" in recs[STILLBORN].reason and "error" in recs[STILLBORN].reason
    assert recs[TWIN].status is Status.DUPLICATE
    assert recs[CHANGES].mutant.id in recs[TWIN].reason
    assert eng.state.reproducible == {FILE: True}
    # Pruning boots nothing, and leaves the pristine file and no mutant object behind.
    assert runner.calls == []
    assert s.live() == SOURCE
    assert not s.compiler.object_path(FILE).exists()
    assert eng.state.applied is None


def test_pruning_a_machine_failure_stops_instead_of_calling_it_stillborn(
    tmp_path: Path,
) -> None:
    s = Setup(tmp_path, pick(CHANGES))
    eng = s.engine(FakeRunner(s.tree))
    eng.pristine_objects()
    # The compiler "runs out of disk" for the mutant.
    (s.tree / "Makefile").write_text(
        "Makefile: ;\n%.o:\n\t@echo 'fatal error: No space left on device' >&2; exit 1\n"
    )
    with pytest.raises(InfraError, match=r"No space left|disk full"):
        eng.prune()
    assert eng.state.walked()[0].status is Status.PENDING
    assert s.live() == SOURCE


def test_sample_walks_the_order_until_n_mutants_can_run(tmp_path: Path) -> None:
    # Stillborn and equivalent ones do not count towards the sample.
    s = Setup(tmp_path, pick(STILLBORN, EQUIVALENT, CHANGES, RETURNS, TWIN), sample=2)
    eng = s.engine(FakeRunner(s.tree))
    eng.prune()
    assert [r.status for r in eng.state.walked()] == [
        Status.STILLBORN,
        Status.EQUIVALENT,
        Status.READY,
        Status.READY,
    ]


def test_full_run_verdicts_per_suite_and_the_tree_restored(tmp_path: Path) -> None:
    s = Setup(tmp_path, pick(CHANGES, EQUIVALENT, RETURNS))
    rules = {
        ">= 16": {"gmem-ioctl": Outcome.FAIL},  # only the Python suite notices
        "pages * extra": {"gmem-ioctl": Outcome.CRASH, "kselftests": Outcome.TIMEOUT},
    }
    runner = FakeRunner(s.tree, rules)
    state = s.engine(runner).run()
    assert state.complete
    recs = by_line(state)
    assert recs[CHANGES].verdicts == {"gmem-ioctl": Verdict.KILLED, "kselftests": Verdict.SURVIVED}
    assert recs[CHANGES].why["gmem-ioctl"].startswith("t1 fail")
    assert recs[RETURNS].verdicts == {"gmem-ioctl": Verdict.KILLED, "kselftests": Verdict.KILLED}
    assert recs[EQUIVALENT].status is Status.EQUIVALENT and not recs[EQUIVALENT].verdicts
    # The baseline ran first, on the pristine file; each mutant ran with its own text.
    labels = [c[0] for c in runner.calls]
    assert labels[0] == "baseline" and runner.calls[0][2] == SOURCE
    assert len(labels) == 3
    assert all(
        m.mutated in text
        for (_, _, text), m in zip(runner.calls[1:], pick(CHANGES, RETURNS), strict=True)
    )
    assert state.baseline == {
        "gmem-ioctl": {"t1": "pass", "t2": "pass"},
        "kselftests": {"t1": "pass", "t2": "pass"},
        "boot": {},
    }
    assert s.live() == SOURCE
    saved = json.loads((s.run_dir / "state.json").read_text())
    assert saved["complete"] is True and saved["applied"] is None


def test_infrastructure_trouble_is_retried_once_then_unknown(tmp_path: Path) -> None:
    s = Setup(tmp_path, pick(CHANGES, RETURNS))
    ids = [m.id for m in s.candidates]
    # CHANGES: first attempt fails to boot, the retry works. RETURNS: never boots.
    runner = FakeRunner(
        s.tree, {">= 16": {"kselftests": Outcome.FAIL}}, infra={ids[0]: 1, ids[1]: 9}
    )
    state = s.engine(runner).run()
    recs = by_line(state)
    assert recs[CHANGES].attempts == 2
    assert recs[CHANGES].verdicts == {"gmem-ioctl": Verdict.SURVIVED, "kselftests": Verdict.KILLED}
    assert recs[RETURNS].attempts == 2
    assert recs[RETURNS].verdicts == {"gmem-ioctl": Verdict.UNKNOWN, "kselftests": Verdict.UNKNOWN}
    assert "did not come up" in recs[RETURNS].why["gmem-ioctl"]


def test_a_retry_runs_only_the_suites_still_undecided(tmp_path: Path) -> None:
    s = Setup(tmp_path, pick(CHANGES))
    runner = FakeRunner(s.tree, {">= 16": {"kselftests": Outcome.ERROR}})
    state = s.engine(runner).run()
    rec = state.walked()[0]
    assert [c[1] for c in runner.calls[1:]] == [tuple(SUITES), ("kselftests",)]
    assert rec.verdicts == {"gmem-ioctl": Verdict.SURVIVED, "kselftests": Verdict.UNKNOWN}


def test_a_mutant_that_does_not_link_is_stillborn(tmp_path: Path) -> None:
    s = Setup(tmp_path, pick(CHANGES, RETURNS))
    state = s.engine(FakeRunner(s.tree, broken=("pages * extra",))).run()
    recs = by_line(state)
    assert recs[RETURNS].status is Status.STILLBORN
    assert "undefined reference" in recs[RETURNS].reason
    assert recs[CHANGES].status is Status.DONE


def test_tests_failing_on_the_pristine_kernel_kill_nothing(tmp_path: Path) -> None:
    s = Setup(tmp_path, pick(CHANGES))
    # t1 of kselftests fails everywhere, pristine included: it cannot tell anything.
    runner = FakeRunner(s.tree, {"pages": {"kselftests": Outcome.FAIL}})
    state = s.engine(runner).run()
    assert state.baseline is not None and state.baseline["kselftests"]["t1"] == "fail"
    assert state.walked()[0].verdicts["kselftests"] is Verdict.SURVIVED


def test_a_pristine_kernel_that_never_runs_stops_the_run(tmp_path: Path) -> None:
    s = Setup(tmp_path, pick(CHANGES))
    with pytest.raises(InfraError, match="pristine kernel"):
        s.engine(FakeRunner(s.tree, infra={"baseline": 2})).run()
    assert s.live() == SOURCE


def test_resume_after_a_kill_continues_and_never_reruns_finished_mutants(
    tmp_path: Path,
) -> None:
    s = Setup(tmp_path, pick(CHANGES, RETURNS, EQUIVALENT))
    ids = {m.mutated: m.id for m in s.candidates}
    # Calls: baseline, CHANGES, then RETURNS is interrupted (Ctrl-C / SIGTERM).
    first = FakeRunner(s.tree, {">= 16": {"gmem-ioctl": Outcome.FAIL}}, interrupt_on_call=3)
    with pytest.raises(KeyboardInterrupt):
        s.engine(first).run()
    assert s.live() == SOURCE, "the pristine file is back after the interruption"
    mid = st.load(s.run_dir)
    assert mid is not None and not mid.complete and mid.applied is None
    assert mid.records[ids[CHANGES]].status is Status.DONE
    assert mid.records[ids[RETURNS]].status is Status.READY

    second = FakeRunner(s.tree, {"pages * extra": {"kselftests": Outcome.FAIL}})
    state = s.engine(second).run()
    assert [c[0] for c in second.calls] == [f"{ids[RETURNS]}-1"]
    assert state.complete
    assert state.records[ids[CHANGES]].verdicts["gmem-ioctl"] is Verdict.KILLED
    assert state.records[ids[RETURNS]].verdicts["kselftests"] is Verdict.KILLED


def test_start_restores_a_file_a_dead_run_left_mutated(tmp_path: Path) -> None:
    s = Setup(tmp_path, pick(CHANGES))
    eng = s.engine(FakeRunner(s.tree))
    eng.prune()
    # SIGKILL with the mutant in the tree: state says so, the file is mutated.
    m = s.candidates[0]
    eng.state.applied = m.id
    st.save(eng.state, s.run_dir)
    (s.tree / FILE).write_text(m.apply(SOURCE))

    said: list[str] = []
    runner = FakeRunner(s.tree)
    s.engine(runner, said).run()
    assert any("restored the pristine file" in line for line in said)
    assert runner.calls[0][2] == SOURCE, "the baseline saw the pristine file"
    assert s.live() == SOURCE


def test_a_tree_that_is_neither_pristine_nor_restorable_is_refused(tmp_path: Path) -> None:
    s = Setup(tmp_path, pick(CHANGES))
    eng = s.engine(FakeRunner(s.tree))
    (s.tree / FILE).write_text(SOURCE + "/* edited by hand */\n")
    (s.run_dir / "pristine" / FILE).write_text("something else\n")
    with pytest.raises(UserError, match="not the file this mutation run started from"):
        eng.run()


def test_a_run_folder_of_other_settings_or_other_mutants_is_refused(tmp_path: Path) -> None:
    s = Setup(tmp_path, pick(CHANGES))
    s.engine(FakeRunner(s.tree))
    with pytest.raises(UserError, match="other settings"):
        open_state(
            s.run_dir, s.source, [FILE], SUITES, seed=2, sample=None, filters={}, candidates=[]
        )
    s.candidates = pick(RETURNS)
    with pytest.raises(UserError, match="differ"):
        s.engine(FakeRunner(s.tree))


def test_candidates_come_from_the_seeded_order(tmp_path: Path) -> None:
    every = generate(FILE, SOURCE)
    s = Setup(tmp_path, shuffled(every, seed=5), sample=3)
    eng = s.engine(FakeRunner(s.tree))
    eng.prune()
    assert [r.mutant.id for r in eng.state.walked()] == [m.id for m in s.candidates][
        : len(eng.state.walked())
    ]
    assert len(eng.state.with_status(Status.READY)) == 3
