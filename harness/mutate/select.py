"""Which lines of a C file may be mutated: line ranges, functions, a series' diff.

A mutation run is only worth its hours on the code under test, so `lab mutate` narrows
each file to the lines a `--lines` range, a `--function` or the series' own diff
selects (several filters intersect: `--function f --series` is "the lines of f the
series touched").

Finding a function is a brace-matching scan, not a C parser: comments, string and
character literals and preprocessor lines are blanked first (so a "{" in a comment or a
`#define` does not count), then every "{" at file level that follows a parameter list
opens a function body. That is right for kernel style (one definition per name, body
braces balanced within the definition) and needs no compiler flags or headers.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Annotations that may stand between a parameter list and the body, e.g.
# `static void f(struct kvm *kvm) __must_hold(&kvm->lock) {`: sparse's lock annotations
# and __attribute__((...)); any "__"-prefixed macro with arguments right after a ")"
# is treated alike.
_ANNOTATION = re.compile(r"__\w+|__attribute__")
_HUNK = re.compile(r"^@@ -\d+(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def parse_ranges(text: str) -> frozenset[int]:
    """'10-20,31,40-42' -> those 1-based line numbers (inclusive ranges)."""
    lines: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if m is None:
            raise ValueError(f"not a line range: {part!r} (expected A-B or N)")
        start = int(m.group(1))
        end = int(m.group(2) or start)
        if start < 1 or end < start:
            raise ValueError(f"not a line range: {part!r} (1 <= A <= B)")
        lines.update(range(start, end + 1))
    if not lines:
        raise ValueError("empty line range")
    return frozenset(lines)


def mask(text: str) -> str:
    """text with comments, string/char literals and preprocessor lines as spaces.

    Same length and same newlines as text, so an offset in the result is an offset in
    the source and line numbers stay put.
    """
    out = list(text)
    i, n = 0, len(text)
    line_start = True
    while i < n:
        c = text[i]
        if line_start and c == "#":
            # A directive runs to the end of the line, and on past a trailing backslash.
            while i < n and not (text[i] == "\n" and text[i - 1] != "\\"):
                if text[i] != "\n":
                    out[i] = " "
                i += 1
            continue
        if c == "\n":
            line_start = True
            i += 1
            continue
        if not c.isspace():
            line_start = False
        if text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            _blank(out, i, end)
            i = end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            _blank(out, i, end)
            i = end
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            end = min(j + 1, n)
            _blank(out, i, end)
            i = end
        else:
            i += 1
    return "".join(out)


def _blank(out: list[str], start: int, end: int) -> None:
    for k in range(start, end):
        if out[k] != "\n":
            out[k] = " "


def function_spans(text: str) -> dict[str, list[tuple[int, int]]]:
    """Every function definition: name -> [(first line, last line)], 1-based.

    The first line is the one with the function's name (the return type may sit on the
    line before it, kernel style allows both); the last is the closing brace's.
    """
    code = mask(text)
    spans: dict[str, list[tuple[int, int]]] = {}
    depth = 0
    for i, c in enumerate(code):
        if c == "{":
            if depth == 0:
                name_at = _function_name_before(code, i)
                if name_at is not None:
                    name, at = name_at
                    end = _matching(code, i, "{", "}")
                    if end is not None:
                        span = (_line_of(text, at), _line_of(text, end))
                        spans.setdefault(name, []).append(span)
            depth += 1
        elif c == "}":
            depth = max(0, depth - 1)
    return spans


def function_lines(text: str, names: Iterable[str]) -> frozenset[int]:
    """The lines of the named functions' definitions; KeyError names the missing ones."""
    spans = function_spans(text)
    wanted = list(names)
    missing = [n for n in wanted if n not in spans]
    if missing:
        raise KeyError(", ".join(missing))
    return frozenset(
        line for n in wanted for start, end in spans[n] for line in range(start, end + 1)
    )


def enclosing_function(text: str, line: int) -> str | None:
    """The function whose definition holds `line`, if any (for the report)."""
    for name, spans in function_spans(text).items():
        if any(start <= line <= end for start, end in spans):
            return name
    return None


def _function_name_before(code: str, brace: int) -> tuple[str, int] | None:
    """(name, offset) if the "{" at `brace` opens a function body, else None."""
    j = _skip_space_back(code, brace - 1)
    while j >= 0 and code[j] == ")":
        opening = _matching_back(code, j)
        if opening is None:
            return None
        k = _skip_space_back(code, opening - 1)
        m = _ident_ending_at(code, k)
        if m is None:
            return None
        name, start = m
        before = _skip_space_back(code, start - 1)
        if _ANNOTATION.fullmatch(name) and before >= 0 and code[before] == ")":
            # An annotation after a parameter list: the parameter list is further back.
            # (A "__" name with no ")" before it is the function: __kvm_gmem_create.)
            j = before
            continue
        return name, start
    return None


def _skip_space_back(code: str, j: int) -> int:
    while j >= 0 and code[j].isspace():
        j -= 1
    return j


def _ident_ending_at(code: str, k: int) -> tuple[str, int] | None:
    end = k + 1
    while k >= 0 and (code[k].isalnum() or code[k] == "_"):
        k -= 1
    word = code[k + 1 : end]
    return (word, k + 1) if _IDENT.fullmatch(word) else None


def _matching(code: str, i: int, open_c: str, close_c: str) -> int | None:
    depth = 0
    for k in range(i, len(code)):
        if code[k] == open_c:
            depth += 1
        elif code[k] == close_c:
            depth -= 1
            if depth == 0:
                return k
    return None


def _matching_back(code: str, j: int) -> int | None:
    depth = 0
    for k in range(j, -1, -1):
        if code[k] == ")":
            depth += 1
        elif code[k] == "(":
            depth -= 1
            if depth == 0:
                return k
    return None


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


# --- a series' diff ------------------------------------------------------------------


def diff_lines(diff: str, path: str) -> frozenset[int]:
    """Lines of `path` (new-file numbering) that a unified diff adds or changes.

    A changed line is a removed line plus an added one, so the added ("+") lines are
    exactly what the diff wrote; pure deletions leave nothing to mutate. Hunk lengths
    are counted, so an added line that itself starts with "+++ " is not a file header.
    """
    lines: set[int] = set()
    current = False
    old_left = new_left = 0
    new_no = 0
    for raw in diff.splitlines():
        if old_left > 0 or new_left > 0:
            tag = raw[:1]
            if tag == "+":
                if current:
                    lines.add(new_no)
                new_no += 1
                new_left -= 1
            elif tag == "-":
                old_left -= 1
            elif tag == "\\":  # "\ No newline at end of file"
                pass
            else:  # context (" " or an empty line some tools strip the space from)
                new_no += 1
                old_left -= 1
                new_left -= 1
            continue
        if raw.startswith("+++ "):
            name = raw[4:].split("\t")[0].strip()
            current = _strip_prefix(name) == path
        elif raw.startswith("@@"):
            m = _HUNK.match(raw)
            if m is None:
                continue
            old_left = int(m.group(1) or "1")
            new_no = int(m.group(2))
            new_left = int(m.group(3) or "1")
    return frozenset(lines)


def _strip_prefix(name: str) -> str:
    if name.startswith(("a/", "b/")):
        return name[2:]
    return name


def git_diff(repo: str, base: str, path: str, head: str = "HEAD") -> str:
    """`git diff base head -- path` in repo (both commits must be in the repository)."""
    done = subprocess.run(
        ["git", "-C", repo, "diff", "--no-color", "--no-ext-diff", base, head, "--", path],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip() or f"git diff exited {done.returncode}")
    return done.stdout
