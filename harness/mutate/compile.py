"""Pruning before any boot: compile just the mutated object, the way the build does.

`make -C <src> O=<obj> <dir>/<file>.o` with the build stage's own make command line
and environment (CC, ccache, KBUILD_BUILD_* fixed), in the build folder the kernel was
built in: kbuild recompiles that one object with the kernel's flags in seconds (the
target is kbuild's own name for the object, see kbuild_targets).

- It does not compile: the mutant is stillborn (the compiler's error is kept).
- Its object is byte-identical to the pristine file's: trivial compiler equivalence
  (TCE). The same line compiled the same way cannot change what the kernel does, so
  booting it would only measure noise.

Why the whole object and not just .text: a mutant can change nothing but data (a
constant in an ops table, a string, an entry in __ex_table or the WARN_ON bug table),
so comparing .text alone would call a real bug "equivalent". The whole file is the
sound test: the object's only inputs are the source, the flags and the build folder's
path, which are identical for the pristine and the mutant compile (same tree, same
O=, KBUILD_BUILD_TIMESTAMP fixed, no DWARF in the lab's configs, and a mutant keeps
the line count so __LINE__ does not move). Anything nondeterministic left would only
make fewer mutants look equivalent, never more; and the pristine object is compiled
twice at the start to prove the comparison can succeed at all (`reproducible`).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from harness import buildlog
from harness.proc import kill_group

COMPILE_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class Compiled:
    sha256: str | None  # the object's; None when it did not compile
    seconds: float
    # When it failed: the code's fault (the mutant is stillborn) or the machine's (a
    # full disk, a killed compiler, a timeout: the run stops, nothing is concluded).
    code_error: bool = False
    reason: str = ""
    excerpt: str = ""

    @property
    def ok(self) -> bool:
        return self.sha256 is not None


@dataclass
class ObjectBuild:
    """How the build stage compiles: its make argv (without target) and environment."""

    make: tuple[str, ...]
    env: Mapping[str, str]
    obj_dir: Path
    timeout_s: float = COMPILE_TIMEOUT_S
    # source -> the make target that compiled its pristine object (see kbuild_targets).
    chosen: dict[str, str] = field(default_factory=dict)

    def object_path(self, source: str) -> Path:
        return self.obj_dir / object_target(source)

    def compile(self, source: str, log: Path) -> Compiled:
        """Compile `source` (relative to the tree) to its object; never raises for make.

        The first call per source tries each of kbuild_targets() until one makes the
        object, and keeps that target: the pristine file is compiled first, so a
        target kbuild does not know is found out there (and never taken for a
        mutant's compile error).
        """
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_bytes(b"")
        if source in self.chosen:
            return self._make(source, self.chosen[source], log)
        first: Compiled | None = None
        for target in kbuild_targets(self.obj_dir, source):
            done = self._make(source, target, log)
            if done.ok:
                self.chosen[source] = target
                return done
            first = first or done
        assert first is not None
        return first

    def _make(self, source: str, target: str, log: Path) -> Compiled:
        obj = self.object_path(source)
        # Removed first, so make cannot decide from mtimes that it is up to date (two
        # edits within one timestamp tick) and leave the previous mutant's object.
        obj.unlink(missing_ok=True)
        start = time.monotonic()
        argv = [*self.make, target]
        with log.open("ab") as sink:
            sink.write(f"$ {' '.join(argv)}\n".encode())
            sink.flush()
            proc = subprocess.Popen(
                argv,
                env=dict(self.env),
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                code = proc.wait(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                kill_group(proc)
                took = time.monotonic() - start
                return Compiled(None, took, reason=f"make {target} timed out after {took:.0f}s")
            except BaseException:
                kill_group(proc)
                raise
        seconds = time.monotonic() - start
        if code != 0 or not obj.is_file():
            # The lab's one judge of a failed make: compiler errors are the code's,
            # "No space left", an OOM-killed cc1 and the like are the machine's.
            failure = buildlog.classify(log.read_text(errors="replace").rsplit("\n$ ", 1)[-1])
            return Compiled(None, seconds, failure.tree, failure.reason, failure.excerpt)
        return Compiled(sha256_bytes(obj.read_bytes()), seconds)

    def forget(self, source: str) -> None:
        """Remove a mutant's object, so the next build cannot mistake it for current."""
        self.object_path(source).unlink(missing_ok=True)


def object_target(source: str) -> str:
    base, ext = os.path.splitext(source)
    if ext != ".c":
        raise ValueError(f"{source}: only .c files compile to an object")
    return base + ".o"


def kbuild_targets(obj_dir: Path, source: str) -> list[str]:
    """The make targets that may compile `source`'s object, most specific first.

    An object is not always built from its own folder: x86 builds virt/kvm/*.c from
    arch/x86/kvm/Makefile as `arch/x86/kvm/../../../virt/kvm/guest_memfd.o`, and
    virt/kvm has no Makefile, so `make virt/kvm/guest_memfd.o` has no rule. The full
    build's .cmd file beside the object names it the way kbuild does (`savedcmd_NAME
    :=`, `cmd_NAME :=` before 6.2); single-target mode finds that name by walking down
    from the top. Then the folder that builds it (`arch/x86/kvm/`, which recompiles
    only what changed), then the plain name.
    """
    plain = object_target(source)
    head, tail = os.path.split(plain)
    names: list[str] = []
    try:
        first = (obj_dir / head / f".{tail}.cmd").read_text(errors="replace").split("\n", 1)[0]
    except OSError:
        first = ""
    m = re.match(r"(?:saved)?cmd_(\S+) :=", first)
    if m and m.group(1) != plain:
        name = m.group(1)
        names.append(name)
        if "/../" in name:
            names.append(name.split("/../", 1)[0] + "/")
    names.append(plain)
    return names


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
