"""`lab mutate`: mutation testing of the kernel code under test (issue 14).

select.py     which lines: --lines ranges, C function spans, a series' diff
mutants.py    Mutant and generate(): universalmutator's C rules, one line each;
              shuffled(): the seeded sampling order
compile.py    ObjectBuild: one object compiled with the build's make argv and env
              (stillborn / TCE-equivalent / duplicate pruning)
state.py      state.json (atomic, after every step) and the Workspace that applies a
              mutant and always restores the pristine file
classify.py   killed / survived / unknown per suite, and the scores
engine.py     the MutantRunner protocol and the Engine: prune, baseline, run each
labrunner.py  the real MutantRunner: `lab build --kernel <tree>` + `lab run --manifest`
workcopy.py   the copy of the tree that mutants are written into
notes.py      survivor notes (--notes FILE): loading, checking, what they account for
report.py     report.md/.html, scores.json; scores()/load_scores() for the history
"""

from harness.mutate.classify import SuiteScore, Verdict, classify_suite
from harness.mutate.compile import ObjectBuild
from harness.mutate.engine import Broken, Engine, InfraFailure, MutantRunner, open_state
from harness.mutate.labrunner import LabRunner
from harness.mutate.mutants import Mutant, generate, shuffled
from harness.mutate.report import load_scores, render, scores

__all__ = [
    "Broken",
    "Engine",
    "InfraFailure",
    "LabRunner",
    "Mutant",
    "MutantRunner",
    "ObjectBuild",
    "SuiteScore",
    "Verdict",
    "classify_suite",
    "generate",
    "load_scores",
    "open_state",
    "render",
    "scores",
    "shuffled",
]
