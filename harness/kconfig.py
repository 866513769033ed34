"""Config stage: base target + fragments -> a verified .config.

The tree's own tools do the merging (make <base>, scripts/kconfig/merge_config.sh -m,
make olddefconfig), so the result is what a kernel developer would get by hand. Then
every symbol a fragment asks for is checked against the final .config (kunit.py's
habit): a request that did not land is an error naming the symbol, the requested and
actual values and the unmet "depends on" from the tree's Kconfig. A symbol the tree
does not define at all (a series-only symbol on mainline) is reported; asked off it is
met, asked on it did not land either: the tree cannot provide it.

Such an error is the user's (exit 3, DESIGN.md), never infrastructure (exit 2: the same
inputs fail the same way, so a retry cannot help) nor a finding about the kernel (exit
1, kept for a tree that does not build or a series that does not apply): whether the
fragment misses a dependency, misspells a symbol or is paired in lab.yaml with a kernel
that lacks it, the fix is in lab.yaml or its fragments.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from harness import kconfig_tree
from harness.errors import UserError
from harness.proc import run_logged
from harness.source import SourceTree


@dataclass(frozen=True)
class Request:
    symbol: str  # without the CONFIG_ prefix
    value: str  # "y", "m", "n", a number or a quoted string, as written
    fragment: str


@dataclass(frozen=True)
class Mismatch:
    symbol: str
    requested: str
    actual: str
    fragment: str
    unmet: str | None  # the symbol's dependencies, annotated with their values
    # False: the tree does not define the symbol, so no fragment can make it land.
    defined: bool = True

    def describe(self) -> str:
        if not self.defined:
            text = f"CONFIG_{self.symbol}: requested {self.requested}, but this tree does not "
            return text + f"define it (from {self.fragment})"
        text = f"CONFIG_{self.symbol}: requested {self.requested}, got {self.actual}"
        text += f" (from {self.fragment})"
        return text + (f"\n      unmet: {self.unmet}" if self.unmet else "")


@dataclass(frozen=True)
class KernelConfig:
    path: Path  # the final .config
    hash: str  # sha256 of the final .config
    base: str
    fragments: tuple[Path, ...]
    requested: int  # how many symbols the fragments asked for
    unknown_symbols: tuple[str, ...] = ()  # asked for, but this tree has no such symbol
    mismatches: tuple[Mismatch, ...] = ()
    seconds: float = 0.0
    log: Path | None = None

    @property
    def missing_symbols(self) -> tuple[str, ...]:
        """DESIGN.md's name: every requested symbol that is not as asked, or not known."""
        landed_wrong = tuple(m.symbol for m in self.mismatches)
        return landed_wrong + tuple(s for s in self.unknown_symbols if s not in landed_wrong)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def verification(self) -> dict[str, object]:
        """The manifest's record of what was checked and what did not land."""
        return {
            "ok": self.ok,
            "requested": self.requested,
            "unknown_to_tree": list(self.unknown_symbols),
            "mismatches": [m.__dict__ for m in self.mismatches],
        }


# --- parsing .config-style text ------------------------------------------------------


def parse_config_lines(lines: Iterable[str]) -> dict[str, str]:
    """CONFIG_X=v and '# CONFIG_X is not set' (= "n"); later lines win, like merge."""
    values: dict[str, str] = {}
    for raw in lines:
        line = raw.strip()
        if line.startswith("CONFIG_") and "=" in line:
            name, _, value = line.partition("=")
            values[name.removeprefix("CONFIG_")] = value
        elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
            values[line[len("# CONFIG_") : -len(" is not set")]] = "n"
    return values


def read_requests(fragments: Iterable[Path]) -> dict[str, Request]:
    """What the fragments ask for, in merge order (a later fragment overrides)."""
    requests: dict[str, Request] = {}
    for frag in fragments:
        for symbol, value in parse_config_lines(frag.read_text().splitlines()).items():
            requests[symbol] = Request(symbol, value, frag.name)
    return requests


def verify(
    requests: Mapping[str, Request], final: Mapping[str, str], kconfig: kconfig_tree.KconfigTree
) -> tuple[tuple[str, ...], tuple[Mismatch, ...]]:
    """Compare requests with the final .config; returns (unknown symbols, mismatches)."""
    unknown: list[str] = []
    mismatches: list[Mismatch] = []
    for symbol, req in sorted(requests.items()):
        # A symbol absent from .config is off (or invisible): that is "n".
        actual = final.get(symbol, "n")
        # Unknown first: "n" for a symbol the tree lacks is not a verified "n" (the
        # sw-protected fragment's KVM_VM_MEMORY_ATTRIBUTES on mainline must be reported).
        # An unreadable Kconfig (no definitions at all) says nothing either way.
        if kconfig.definitions and not kconfig.knows(symbol):
            unknown.append(symbol)
            # Asked on, it cannot land. Kconfig drops what the tree does not define, so
            # one in .config as asked is defined where this reader did not look.
            if actual != req.value:
                mismatches.append(Mismatch(symbol, req.value, actual, req.fragment, None, False))
            continue
        if actual == req.value:
            continue
        unmet = kconfig.explain(symbol, final)
        mismatches.append(Mismatch(symbol, req.value, actual, req.fragment, unmet))
    return tuple(unknown), tuple(mismatches)


# --- the stage -----------------------------------------------------------------------


def inputs_key(tree: SourceTree, base: str, fragments: Iterable[Path]) -> str:
    """Everything the final .config depends on: the tree's Kconfig, the base target, the
    fragments and the compiler (Kconfig records its version and probes its features)."""
    h = hashlib.sha256(f"{kconfig_identity(tree)}\0{base}\0{compiler_id()}\0".encode())
    for frag in fragments:
        h.update(frag.name.encode() + b"\0" + frag.read_bytes() + b"\0")
    return h.hexdigest()


def kconfig_identity(tree: SourceTree) -> str:
    """git and deb trees never change: their identity. A developer's checkout changes
    with every edit, but only Kconfig files, defconfigs and the top Makefile matter to
    the config: fingerprint those, so an edit to a .c file does not re-run defconfig."""
    if tree.kind != "path":
        return tree.identity
    h = hashlib.sha256(str(tree.path).encode())
    for root, dirs, files in os.walk(tree.path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = os.path.relpath(root, tree.path)
        for name in sorted(files):
            if (
                name.startswith("Kconfig")
                or name.endswith(("config", ".config"))
                or (rel == "." and name == "Makefile")
            ):
                st = os.stat(os.path.join(root, name))
                h.update(f"{rel}/{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return "kconfig-" + h.hexdigest()


@functools.cache
def compiler_id() -> str:
    done = subprocess.run(["gcc", "--version"], capture_output=True, text=True, check=False)
    return done.stdout.splitlines()[0] if done.stdout else "no gcc"


def configure(
    tree: SourceTree,
    base: str,
    fragments: tuple[Path, ...],
    outdir: Path,
    *,
    env: Mapping[str, str],
    make_args: tuple[str, ...] = (),
) -> KernelConfig:
    """Produce and verify outdir/.config; reuses it when the inputs are unchanged."""
    start = time.monotonic()
    for frag in fragments:
        if not frag.is_file():
            raise UserError(f"config fragment {frag} not found", "check configs: in lab.yaml")
    outdir.mkdir(parents=True, exist_ok=True)
    log = outdir / "config.log"
    config = outdir / ".config"
    stamp = outdir / ".gmemlab-inputs"
    key = inputs_key(tree, base, fragments)
    if not (config.is_file() and stamp.is_file() and stamp.read_text().strip() == key):
        stamp.unlink(missing_ok=True)
        log.write_text("")
        make = ["make", "-C", str(tree.path), f"O={outdir}", *make_args]
        run_logged([*make, base], log=log, label=f"config: make {base}", env=env)
        merge = tree.path / "scripts" / "kconfig" / "merge_config.sh"
        run_logged(
            ["sh", merge, "-m", "-O", outdir, config, *fragments],
            log=log,
            label="config: merge_config.sh",
            cwd=tree.path,
            env=env,
        )
        run_logged([*make, "olddefconfig"], log=log, label="config: olddefconfig", env=env)
        stamp.write_text(key + "\n")
    final = parse_config_lines(config.read_text().splitlines())
    requests = read_requests(fragments)
    unknown, mismatches = verify(requests, final, kconfig_tree.load(tree.path))
    result = KernelConfig(
        path=config,
        hash=hashlib.sha256(config.read_bytes()).hexdigest(),
        base=base,
        fragments=fragments,
        requested=len(requests),
        unknown_symbols=unknown,
        mismatches=mismatches,
        seconds=time.monotonic() - start,
        log=log,
    )
    (outdir / "verification.json").write_text(json.dumps(result.verification(), indent=2))
    return result


def require_verified(cfg: KernelConfig, tree: SourceTree) -> None:
    """Fail the config stage when a requested symbol did not land."""
    if cfg.ok:
        return
    lines = "\n".join("    " + m.describe() for m in cfg.mismatches)
    fixes = []
    if any(m.defined for m in cfg.mismatches):
        fixes.append("enable the unmet dependencies in the fragment too, or drop the request")
    if not all(m.defined for m in cfg.mismatches):
        fixes.append(
            "for a symbol the tree does not define: fix its name in the fragment, or run "
            "this config set on a kernel that has it (lab.yaml: --kernel, matrix configs)"
        )
    raise UserError(
        f"config: {len(cfg.mismatches)} requested symbol(s) did not land in {cfg.path} "
        f"({tree.describe}):\n{lines}",
        f"{'; '.join(fixes)} (merge log: {cfg.log})",
    )
