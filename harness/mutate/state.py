"""The run folder's state.json and the pristine files: what makes `lab mutate` resumable.

state.json is rewritten atomically (temporary file + rename) after every step, so a
killed run leaves either the old or the new state, never half of one. It holds the
candidate order (so a restart samples the same mutants), each walked mutant's record,
the baseline's results and `applied`: the mutant whose text may be in the tree right
now. A run that died with a mutant applied is repaired on the next start from the
pristine copy kept in the run folder, whose sha256 the state records.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.mutate.classify import Verdict
from harness.mutate.mutants import Mutant

STATE_VERSION = 1
STATE_FILE = "state.json"
PRISTINE_DIR = "pristine"


class Status(StrEnum):
    PENDING = "pending"  # walked, not compiled yet
    STILLBORN = "stillborn"  # does not compile: not counted
    EQUIVALENT = "equivalent"  # object identical to the pristine one (TCE): not run
    DUPLICATE = "duplicate"  # object identical to another sampled mutant's: not run
    READY = "ready"  # compiles to a different object: to run
    DONE = "done"  # ran: a verdict per suite


@dataclass
class MutantRecord:
    mutant: Mutant
    status: Status = Status.PENDING
    # The compiler's error (stillborn), the TCE note (equivalent), or empty.
    reason: str = ""
    # suite -> verdict; while READY, only the suites already decided.
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    # suite -> the deciding line (the failing test, the infrastructure error).
    why: dict[str, str] = field(default_factory=dict)
    attempts: int = 0
    compile_s: float = 0.0
    run_s: float = 0.0
    # The mutant's object file's sha256 (TCE: against the pristine and the others).
    object_sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        # Status and Verdict are StrEnums: json writes them as their values.
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MutantRecord:
        return cls(
            mutant=Mutant.from_json(data["mutant"]),
            status=Status(data["status"]),
            reason=data.get("reason", ""),
            verdicts={k: Verdict(v) for k, v in data.get("verdicts", {}).items()},
            why=dict(data.get("why", {})),
            attempts=int(data.get("attempts", 0)),
            compile_s=float(data.get("compile_s", 0.0)),
            run_s=float(data.get("run_s", 0.0)),
            object_sha256=data.get("object_sha256"),
        )


@dataclass
class MutationState:
    """Everything state.json holds."""

    tree: str
    # file (relative to the tree) -> sha256 of its pristine content.
    files: dict[str, str]
    suites: list[str]
    seed: int
    sample: int | None
    # How the lines were chosen, for the report (e.g. {"function": ["kvm_gmem_fault"]}).
    filters: dict[str, Any]
    # Every candidate's id, in sampling order: a restart must generate the same list.
    order: list[str]
    created: str = field(default_factory=lambda: dt.datetime.now().isoformat(timespec="seconds"))
    version: int = STATE_VERSION
    records: dict[str, MutantRecord] = field(default_factory=dict)
    # The pristine kernel's results: suite -> test -> outcome.
    baseline: dict[str, dict[str, str]] | None = None
    baseline_s: float = 0.0
    # file -> sha256 of its pristine object, and whether two compiles agreed.
    objects: dict[str, str] = field(default_factory=dict)
    reproducible: dict[str, bool] = field(default_factory=dict)
    # The mutant whose text may be in the tree now (None: all files pristine).
    applied: str | None = None
    complete: bool = False
    wall_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MutationState:
        if data.get("version") != STATE_VERSION:
            raise UserError(
                f"state.json version {data.get('version')!r}, this lab reads {STATE_VERSION}",
                "start a new run with another --results folder",
            )
        state = cls(**{k: v for k, v in data.items() if k != "records"})
        state.records = {k: MutantRecord.from_json(r) for k, r in data["records"].items()}
        return state

    # --- views ------------------------------------------------------------------------

    def walked(self) -> list[MutantRecord]:
        """Records in sampling order."""
        return [self.records[i] for i in self.order if i in self.records]

    def with_status(self, *statuses: Status) -> list[MutantRecord]:
        return [r for r in self.walked() if r.status in statuses]


def save(state: MutationState, run_dir: Path) -> None:
    path = run_dir / STATE_FILE
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as sink:
        sink.write(json.dumps(state.to_json(), indent=1) + "\n")
        sink.flush()
        os.fsync(sink.fileno())
    os.replace(tmp, path)


def load(run_dir: Path) -> MutationState | None:
    path = run_dir / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{path} is not valid JSON: {exc}", "move it away to start this run afresh"
        ) from None
    return MutationState.from_json(data)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    """Replace path's content by rename: never half a file, and never through the old
    inode (a hard-linked copy of a tree must not change its original)."""
    tmp = path.with_name(f".{path.name}.gmemlab-tmp")
    tmp.write_bytes(data)
    if path.exists():
        shutil.copymode(path, tmp)
    os.replace(tmp, path)


class Workspace:
    """The tree being mutated, its pristine copies and the state that says which is in."""

    def __init__(self, tree: Path, run_dir: Path, state: MutationState) -> None:
        self.tree, self.run_dir, self.state = tree, run_dir, state
        self.pristine_dir = run_dir / PRISTINE_DIR

    def pristine_path(self, file: str) -> Path:
        return self.pristine_dir / file

    def pristine_text(self, file: str) -> str:
        return self.pristine_path(file).read_text()

    def keep_pristine(self, source: Path) -> None:
        """On a new run: copy each file from the pristine source tree into the run folder
        (from the source, not the work copy: a copy left mutated by a dead run of another
        folder must not become this run's idea of pristine)."""
        for file, digest in self.state.files.items():
            target = self.pristine_path(file)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / file, target)
            if sha256_file(target) != digest:
                raise UserError(f"{source / file} changed while the run started", "retry")

    def ensure_pristine(self) -> list[str]:
        """Every file back to its pristine content; returns the files it had to restore.

        On a start, this repairs a run that died with a mutant applied. A file that is
        neither pristine nor restorable (its kept copy is gone or differs) stops the run
        rather than mutate an unknown tree.
        """
        restored = []
        for file, digest in self.state.files.items():
            live = self.tree / file
            if live.is_file() and sha256_file(live) == digest:
                continue
            kept = self.pristine_path(file)
            if not kept.is_file() or sha256_file(kept) != digest:
                raise UserError(
                    f"{live} is not the file this mutation run started from (sha256 "
                    f"{digest[:12]}) and the run folder's pristine copy cannot restore it",
                    "restore the file by hand (or start a new run with another --results)",
                )
            write_atomic(live, kept.read_bytes())
            restored.append(file)
        if self.state.applied is not None:
            self.state.applied = None
            save(self.state, self.run_dir)
        return restored

    @contextmanager
    def applied(self, mutant: Mutant) -> Iterator[None]:
        """The mutant's text in the tree for the block; the pristine file after it, also
        when the block raises (Ctrl-C, SIGTERM turned into an exception, a bug)."""
        text = mutant.apply(self.pristine_text(mutant.file))
        # Recorded first: if the process dies after the write, the next start knows.
        self.state.applied = mutant.id
        save(self.state, self.run_dir)
        try:
            write_atomic(self.tree / mutant.file, text.encode())
            yield
        finally:
            self.restore(mutant.file)

    def restore(self, file: str) -> None:
        live = self.tree / file
        data = self.pristine_path(file).read_bytes()
        if not live.is_file() or live.read_bytes() != data:
            write_atomic(live, data)
        self.state.applied = None
        save(self.state, self.run_dir)
