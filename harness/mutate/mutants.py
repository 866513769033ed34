"""Mutants of a C file: universalmutator's rules, one line changed per mutant.

universalmutator (PyPI) is a regexp rewriter with C rules for operators, constants,
conditions and deleted statements. Its `mutate FILE --noCheck` CLI writes one whole
copy of the file per mutant (3,600 copies of guest_memfd.c); the lab calls the function
that CLI calls, `mutator.mutants_regexp`, with the CLI's own rule list for a .c file and
its default of leaving string literals alone, and gets (line, replacement) pairs. The
version is pinned in pyproject.toml: a mutant's id, and so a resumed run, depend on the
exact rules.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import io
import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from universalmutator import mutator

# What `mutate foo.c` uses (genmutants: universal + the language + c_like for C).
C_RULES = ("universal.rules", "c.rules", "c_like.rules")
# Preprocessor lines are not code under test: a mutated #if or #define either does not
# compile or changes what the build is, not what the function does.
IGNORE_PATTERNS = (r"^\s*#",)
ID_DIGITS = 12


@dataclass(frozen=True)
class Mutant:
    """One planted bug: `line` of `file` (relative to the tree) replaced by `mutated`."""

    id: str
    file: str
    line: int
    original: str
    mutated: str
    rule: str
    diff: str

    def apply(self, text: str) -> str:
        """text (the pristine file) with this mutant's line replaced."""
        lines = text.splitlines(keepends=True)
        if not 1 <= self.line <= len(lines):
            raise ValueError(f"{self.file} has no line {self.line}")
        current = lines[self.line - 1].rstrip("\n")
        if current != self.original:
            raise ValueError(
                f"{self.file}:{self.line} is {current!r}, the mutant expects {self.original!r}"
            )
        lines[self.line - 1] = self.mutated + "\n"
        return "".join(lines)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Mutant:
        return cls(**data)


def mutant_id(file: str, line: int, mutated: str) -> str:
    """Stable across runs and machines: the same change at the same place, the same id."""
    digest = hashlib.sha256(f"{file}\0{line}\0{mutated}".encode()).hexdigest()
    return digest[:ID_DIGITS]


def generate(file: str, text: str, lines: frozenset[int] | None = None) -> list[Mutant]:
    """All mutants of `text` (the content of `file`), on `lines` only if given.

    Sorted by line, then replacement, so the list (and a seeded sample of it) is the
    same on every run.
    """
    source = text.splitlines(keepends=True)
    if source and not source[-1].endswith("\n"):
        source[-1] += "\n"
    # It prints its progress ("MUTATING WITH RULES: ..."); the lab says its own.
    with contextlib.redirect_stdout(io.StringIO()):
        raw = mutator.mutants_regexp(
            source,
            ruleFiles=list(C_RULES),
            mutateTestCode=False,
            mutateBoth=False,
            ignorePatterns=list(IGNORE_PATTERNS),
            ignoreStringOnly=True,
        )
    found: dict[str, Mutant] = {}
    for lineno, new_text, rule_used, _ in raw:
        if lines is not None and lineno not in lines:
            continue
        original = source[lineno - 1].rstrip("\n")
        mutated = _one_line(original, new_text.rstrip("\n"))
        if mutated == original:
            continue
        mid = mutant_id(file, lineno, mutated)
        if mid in found:
            continue
        diff = unified_diff(file, source, lineno, mutated)
        found[mid] = Mutant(mid, file, lineno, original, mutated, str(rule_used[0]), diff)
    return sorted(found.values(), key=lambda m: (m.file, m.line, m.mutated))


def _one_line(original: str, mutated: str) -> str:
    """Keep a mutant on one line when C allows it.

    Some rules add a statement on a new line ("x;" -> "x;\\nbreak;"). One more line
    moves every later line's number, so __LINE__ in every later WARN_ON (the bug table)
    changes and no such mutant could ever compile to the original's object: TCE
    pruning would be blind to "return x; break;". Joined with a space the line count
    stays. Not when the line ends in a // comment (the joined statement would be
    commented out) or a backslash continuation.
    """
    if "\n" not in mutated or "//" in original or original.rstrip().endswith("\\"):
        return mutated
    first, *rest = mutated.split("\n")
    return " ".join([first, *(r.strip() for r in rest)])


def unified_diff(file: str, source: Sequence[str], line: int, mutated: str) -> str:
    new = list(source)
    new[line - 1] = mutated + "\n"
    return "".join(difflib.unified_diff(source, new, fromfile=f"a/{file}", tofile=f"b/{file}", n=3))


def shuffled(mutants: Iterable[Mutant], seed: int) -> list[Mutant]:
    """A reproducible order to sample from: the same seed, the same order.

    random.Random(seed).shuffle is deterministic for a given seed and list on every
    CPython 3 (the Mersenne Twister and its integer sampling have not changed).
    """
    order = sorted(mutants, key=lambda m: (m.file, m.line, m.mutated))
    random.Random(seed).shuffle(order)
    return order
