"""A tiny kernel-like tree whose Makefile compiles one object the way kbuild is asked to
(`make -C <src> O=<obj> virt/kvm/guest_memfd.o`, with real gcc), and a fake
MutantRunner whose suites judge the mutated file's text."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.mutate.compile import ObjectBuild
from harness.mutate.engine import Broken, InfraFailure, RunOutcome
from harness.results import Outcome, TestResult

FILE = "virt/kvm/guest_memfd.c"

# -Werror like CONFIG_WERROR: a `continue;` outside a loop or an unused value fails.
MAKEFILE = """\
O ?= .
Makefile: ;
.PHONY: FORCE
FORCE:
%.o: FORCE
\t@mkdir -p $(O)/$(dir $@)
\tgcc -O2 -Wall -Werror -c $(CURDIR)/$*.c -o $(O)/$@
"""

SOURCE = """\
// SPDX-License-Identifier: GPL-2.0
int kvm_gmem_pages(int size, int shift)
{
\tint pages = size >> shift;
\tint extra = 0;

\textra = extra + 0;
\tif (pages > 16)
\t\treturn pages - 1;
\treturn pages + extra;
}
"""


def make_c_tree(root: Path) -> Path:
    (root / "virt" / "kvm").mkdir(parents=True)
    (root / "Makefile").write_text(MAKEFILE)
    (root / FILE).write_text(SOURCE)
    return root


def object_build(tree: Path, obj: Path) -> ObjectBuild:
    obj.mkdir(parents=True, exist_ok=True)
    return ObjectBuild(("make", "-s", "-C", str(tree), f"O={obj}"), dict(os.environ), obj)


def line_of(needle: str) -> int:
    return next(i for i, ln in enumerate(SOURCE.splitlines(), 1) if needle in ln)


@dataclass
class FakeRunner:
    """Each suite runs two tests; `rules` maps a substring of the mutated file to the
    outcome suite -> outcome of its first test ("t1"). `infra` maps a label prefix to
    how many of its first calls end in infrastructure trouble."""

    tree: Path
    rules: Mapping[str, Mapping[str, Outcome]] = field(default_factory=dict)
    infra: dict[str, int] = field(default_factory=dict)
    broken: tuple[str, ...] = ()
    interrupt_on_call: int | None = None
    calls: list[tuple[str, tuple[str, ...], str]] = field(default_factory=list)

    def run(
        self, tree: Path, suites: Sequence[str], deadline_s: float, *, label: str
    ) -> RunOutcome:
        text = (tree / FILE).read_text()
        self.calls.append((label, tuple(suites), text))
        if self.interrupt_on_call == len(self.calls):
            raise KeyboardInterrupt
        if any(b in text for b in self.broken):
            return Broken("ld: undefined reference to `kvm_gmem_nope'")
        for prefix, left in self.infra.items():
            if label.startswith(prefix) and left > 0:
                self.infra[prefix] = left - 1
                return InfraFailure("the VM did not come up: no SSH banner", "boot")
        out: dict[str, list[TestResult]] = {}
        for s in suites:
            outcome = Outcome.PASS
            for needle, per_suite in self.rules.items():
                if needle in text and s in per_suite:
                    outcome = per_suite[s]
            out[s] = [TestResult(s, "t1", outcome), TestResult(s, "t2", Outcome.PASS)]
        return out
