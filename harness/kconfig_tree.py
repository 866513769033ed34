"""Just enough of a Kconfig reader to say which symbols a tree defines and why one is off.

The config stage needs two answers the final .config cannot give: "does this tree know
CONFIG_X at all?" (series-only symbols on mainline) and "why did X not take the value
asked for?" (its unmet `depends on`, including enclosing `if` blocks and menus). Only
the files reachable from the top-level Kconfig for the lab's architecture (arch.HOST)
are read, so another architecture's symbols do not count as known.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from harness import arch

# What `source "arch/$(SRCARCH)/Kconfig"` and friends expand to.
ARCH_VARS = dict.fromkeys(("SRCARCH", "ARCH", "HEADER_ARCH"), arch.HOST.kbuild_arch)
_SOURCE = re.compile(r'^(o?r?source|r?osource)\s+"([^"]+)"')
_ENTRY = re.compile(r"^(menuconfig|config)\s+([A-Za-z0-9_]+)\s*$")
_PROMPT = re.compile(r'^(bool|tristate|string|int|hex|prompt|def_bool|def_tristate)\s+"')
_BLOCK_ENDERS = {
    "config",
    "menuconfig",
    "choice",
    "endchoice",
    "menu",
    "endmenu",
    "if",
    "endif",
    "source",
    "osource",
    "rsource",
    "orsource",
    "comment",
    "mainmenu",
}


@dataclass
class Definition:
    """One `config X` block: where, whether it has a prompt, and its conditions."""

    where: str
    conditions: list[str] = field(default_factory=list)
    has_prompt: bool = False
    # def_bool/def_tristate/default expressions: how a prompt-less symbol gets a value.
    defaults: list[str] = field(default_factory=list)


@dataclass
class KconfigTree:
    definitions: dict[str, list[Definition]] = field(default_factory=dict)

    def knows(self, symbol: str) -> bool:
        return symbol in self.definitions

    def explain(self, symbol: str, values: Mapping[str, str], depth: int = 2) -> str | None:
        """The unmet conditions of symbol, annotated with values, one level deeper."""
        parts: list[str] = []
        for d in self.definitions.get(symbol, []):
            unmet = [c for c in d.conditions if evaluate(c, values) == 0]
            for cond in unmet:
                text = f"depends on {annotate(cond, values)} ({d.where})"
                if depth > 1:
                    for dep in sorted(set(symbols_in(cond))):
                        if values.get(dep, "n") == "n" and self.knows(dep):
                            deeper = self.explain(dep, values, depth - 1)
                            if deeper:
                                text += f"; {dep}: {deeper}"
                parts.append(text)
            if not unmet and not d.has_prompt:
                how = " or ".join(annotate(x, values) for x in d.defaults)
                parts.append(
                    f"no prompt ({d.where}): cannot be asked for directly; "
                    + (f"it is {how}, or " if how else "")
                    + "set by another symbol's select"
                )
        return "; ".join(parts) or None


# --- reading the tree ----------------------------------------------------------------


def load(srctree: Path) -> KconfigTree:
    return _load_cached(str(srctree.resolve()), _mtime(srctree / "Kconfig"))


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return 0


@lru_cache(maxsize=4)
def _load_cached(srctree: str, _stamp: int) -> KconfigTree:
    tree = KconfigTree()
    root = Path(srctree)
    if (root / "Kconfig").is_file():
        _read(root, root / "Kconfig", [], tree, set())
    return tree


def _logical_lines(path: Path) -> list[tuple[int, str, str]]:
    """(line number, raw line, stripped line) with backslash continuations joined."""
    out: list[tuple[int, str, str]] = []
    pending = ""
    start = 0
    for no, raw in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not pending:
            start = no
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        full = pending + raw
        pending = ""
        out.append((start, full, full.strip()))
    return out


def _indent(raw: str) -> int:
    return len(raw.expandtabs(8)) - len(raw.expandtabs(8).lstrip())


def _read(root: Path, path: Path, outer: list[str], tree: KconfigTree, seen: set[Path]) -> None:
    if path in seen or not path.is_file():
        return
    seen.add(path)
    rel = path.relative_to(root) if path.is_relative_to(root) else path
    # Conditions from enclosing `if`s and menus; `None` marks a menu/choice whose own
    # `depends on` lines are still being read.
    stack: list[list[str]] = []
    current: Definition | None = None
    block_deps: list[str] | None = None  # a menu/choice/comment's depends on
    help_indent: int | None = None
    in_help = False
    for no, raw, line in _logical_lines(path):
        if in_help:
            if not line:
                continue
            ind = _indent(raw)
            if help_indent is None:
                help_indent = ind
            if ind >= help_indent:
                continue
            in_help = False
        if not line or line.startswith("#"):
            continue
        word = line.split()[0]
        if word in _BLOCK_ENDERS:
            current = None
            block_deps = None
        enclosing = outer + [c for frame in stack for c in frame]
        if m := _ENTRY.match(line):
            current = Definition(f"{rel}:{no}", list(enclosing))
            tree.definitions.setdefault(m.group(2), []).append(current)
        elif m := _SOURCE.match(line):
            name = m.group(2)
            for var, value in ARCH_VARS.items():
                name = name.replace(f"$({var})", value)
            relative = m.group(1).startswith(("r", "or"))
            pattern = str((path.parent if relative else root) / name)
            for hit in sorted(glob.glob(pattern)):
                _read(root, Path(hit), enclosing, tree, seen)
        elif word == "if":
            stack.append([line[2:].strip()])
        elif word in ("menu", "choice", "comment"):
            if word != "comment":
                stack.append([])
            block_deps = stack[-1] if word != "comment" else []
        elif word in ("endif", "endmenu", "endchoice"):
            if stack:
                stack.pop()
        elif word in ("help", "---help---"):
            in_help, help_indent = True, None
        elif line.startswith("depends on "):
            cond = line[len("depends on ") :].strip()
            if current is not None:
                current.conditions.append(cond)
            elif block_deps is not None:
                block_deps.append(cond)
        elif current is not None and (_PROMPT.match(line) or line.startswith("prompt ")):
            current.has_prompt = current.has_prompt or '"' in line
        elif current is not None and word in ("def_bool", "def_tristate", "default"):
            expr = line[len(word) :].strip()
            if expr not in ("n", "y", "m"):
                current.defaults.append(expr)


# --- expressions ---------------------------------------------------------------------

_TOKEN = re.compile(r'\s*(&&|\|\||!=|<=|>=|[!()=<>]|"[^"]*"|[A-Za-z0-9_]+|\$\([^)]*\)|\S)')
_TRI = {"n": 0, "m": 1, "y": 2}


def _tokens(expr: str) -> list[str]:
    return [t for t in _TOKEN.findall(expr) if t]


def symbols_in(expr: str) -> list[str]:
    return [
        t for t in _tokens(expr) if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", t) and t not in _TRI
    ]


def annotate(expr: str, values: Mapping[str, str]) -> str:
    """menuconfig style: `A && B` -> `A [=y] && B [=n]`."""
    return re.sub(
        r"\b([A-Z_][A-Z0-9_]*)\b",
        lambda m: f"{m.group(1)} [={values.get(m.group(1), 'n')}]",
        expr,
    )


def evaluate(expr: str, values: Mapping[str, str]) -> int | None:
    """Tristate value of a Kconfig expression (0 n, 1 m, 2 y); None if not understood."""
    tokens = _tokens(expr)
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def value_of(tok: str) -> str:
        if tok.startswith('"'):
            return tok.strip('"')
        if tok in _TRI or tok.isdigit():
            return tok
        return values.get(tok, "n").strip('"')

    def atom() -> int:
        tok = take()
        if tok == "!":
            return 2 - atom()
        if tok == "(":
            v = or_expr()
            if take() != ")":
                raise ValueError
            return v
        if tok.startswith("$") or tok in "&|)=<>":
            raise ValueError
        if peek() in ("=", "!=", "<", ">", "<=", ">="):
            op = take()
            left, right = value_of(tok), value_of(take())
            if op in ("=", "!="):
                return 2 if (left == right) == (op == "=") else 0
            try:
                a, b = int(left, 0), int(right, 0)
            except ValueError:
                return 0
            result = {"<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[op]
            return 2 if result else 0
        return _TRI.get(value_of(tok), 0)

    def chain(operand: Callable[[], int], op: str, combine: Callable[[int, int], int]) -> int:
        # Left to right over `operand op operand op ...`: && is the minimum, || the maximum.
        v = operand()
        while peek() == op:
            take()
            v = combine(v, operand())
        return v

    def and_expr() -> int:
        return chain(atom, "&&", min)

    def or_expr() -> int:
        return chain(and_expr, "||", max)

    try:
        result = or_expr()
    except (ValueError, IndexError):
        return None
    return result if pos == len(tokens) else None
