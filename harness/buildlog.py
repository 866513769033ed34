"""Why a kernel make failed: the tree under test, or the machine it ran on.

For a patch-validation lab a compile error in the kernel under test is the most
important finding there is (exit 1), while a full disk, an OOM-killed compiler or a
missing tool says nothing about the patch (exit 2). The make log decides: machine
trouble is looked for first, because it makes the compiler print errors too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# The machine failed the build: these mean nothing about the tree's code.
_INFRA = (
    ("disk full", re.compile(r"No space left on device|Disk quota exceeded")),
    ("out of memory", re.compile(
        r"Cannot allocate memory|virtual memory exhausted"
        r"|[Kk]illed signal terminated program|internal compiler error: Killed")),
    ("a tool is missing", re.compile(
        r"(?:: |^)(?:\S+: )?(?:command )?not found$"
        r"|No such file or directory.*\b(?:gcc|ld|make|flex|bison|perl|bc)\b")),
    ("make was killed", re.compile(
        r"\*\*\* \[[^\]]*\] (?:Killed|Terminated|Interrupt)|Error 137\b")),
)  # fmt: skip
# The tree failed to build: the compiler's or linker's own error lines.
_TREE = re.compile(
    r"^\S+:\d+:\d+: (?:fatal )?error: .*"  # gcc/clang: file:line:col: error: ...
    r"|^\S+: (?:fatal )?error: .*"  # file: error: (assembler, a missing include)
    r"|.*undefined reference to .*"
    r"|.*multiple definition of .*"
    r"|^ld(?:\.\w+)?: .*error.*"
    r"|^\S*ld: .*(?:undefined|cannot find|error).*"
    r"|^(?:ERROR|error): modpost: .*"
    r"|^\S+:\d+: error: .*"  # Kconfig / Makefile errors with a line number
)
_MAKE_ERROR = re.compile(r"^make(?:\[\d+\])?: \*\*\* .*Error \d+")
_EXCERPT_LINES = 12


@dataclass(frozen=True)
class BuildFailure:
    """What a failed make says about itself."""

    tree: bool  # True: the code under test does not build (a finding); False: the machine
    reason: str  # one line for the report
    excerpt: str  # the first error lines, as the compiler printed them

    @property
    def first_error(self) -> str:
        return self.excerpt.splitlines()[0] if self.excerpt else self.reason


def classify(log_text: str) -> BuildFailure:
    lines = log_text.splitlines()
    for what, pattern in _INFRA:
        hits = [ln for ln in lines if pattern.search(ln)]
        if hits:
            return BuildFailure(False, f"the build machine failed the build: {what}",
                                "\n".join(hits[:_EXCERPT_LINES]))  # fmt: skip
    errors = [i for i, ln in enumerate(lines) if _TREE.match(_strip_status(ln))]
    if errors:
        first = errors[0]
        # The error with the lines gcc prints after it (the source line and caret).
        excerpt = [_strip_status(ln) for ln in lines[first : first + 4]]
        excerpt += [_strip_status(lines[i]) for i in errors[1:] if i >= first + 4]
        return BuildFailure(True, f"the kernel does not build: {_strip_status(lines[first])}"[:300],
                            "\n".join(excerpt[:_EXCERPT_LINES]))  # fmt: skip
    make_errors = [ln for ln in lines if _MAKE_ERROR.match(_strip_status(ln))]
    if make_errors:
        # make failed a recipe without a compiler message we know: treat it as the tree's
        # (a broken Makefile or script in the tree) but quote make's own words.
        return BuildFailure(True, f"the kernel does not build: {_strip_status(make_errors[0])}",
                            "\n".join(make_errors[:_EXCERPT_LINES]))  # fmt: skip
    return BuildFailure(
        False, "make failed without an error line in its log", "\n".join(lines[-8:])
    )


def classify_file(log: Path) -> BuildFailure:
    try:
        text = log.read_text(errors="replace")
    except OSError as exc:
        return BuildFailure(False, f"make failed and its log is unreadable: {exc}", "")
    return classify(text)


def _strip_status(line: str) -> str:
    """make indents nothing, but a log read back may carry trailing blanks or CRs."""
    return line.strip()
