"""Stand-ins for the remote layer, the build and the VM, for suite and runner tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Unpack

from harness.crash import Crash, scan
from harness.interrupt import Interrupted
from harness.remote import Endpoint, Ran, RunOptions

# argv -> (exit code or None, stdout); None with lost=True simulates a dead VM.
Script = Callable[[list[str]], "Reply"]


@dataclass
class Reply:
    code: int | None = 0
    out: str = ""
    lost: bool = False
    timed_out: bool = False
    # Ctrl-C/SIGTERM while the command runs: its output so far is logged, then the
    # interrupt is raised (as harness.remote does).
    interrupt: str | None = None


class RecordingRunner:
    """A CommandRunner (harness.suites.base) that records every argv and leaves the
    answer to answer(argv, timeout_s, log): FakeRemote's and hostfakes' shells."""

    calls: list[list[str]]

    def answer(self, argv: list[str], timeout_s: float, log: Path | None) -> Ran:
        raise NotImplementedError

    def run(self, argv: Sequence[str], **options: Unpack[RunOptions]) -> Ran:
        argv = list(argv)
        self.calls.append(argv)
        return self.answer(argv, options["timeout_s"], options.get("log"))


@dataclass
class FakeRemote(RecordingRunner):
    script: Script
    files: dict[str, str] = field(default_factory=dict)
    calls: list[list[str]] = field(default_factory=list)
    pushed: list[tuple[Path, str]] = field(default_factory=list)

    def __enter__(self) -> FakeRemote:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def connect(self, deadline_s: float = 60.0) -> float:
        return 0.0

    def close(self) -> None:
        pass

    def push(self, items: Sequence[tuple[Path, str]], dest: str) -> int:
        self.pushed.extend(items)
        return 1234

    def answer(self, argv: list[str], timeout_s: float, log: Path | None) -> Ran:
        reply = self.script(argv)
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(f"$ {' '.join(argv)}\n{reply.out}")
        if reply.interrupt is not None:
            raise Interrupted(reply.interrupt)
        code = 124 if reply.timed_out else reply.code
        return Ran(
            " ".join(argv),
            None if reply.lost else code,
            reply.out,
            "",
            0.5,
            timed_out=reply.timed_out,
            lost=reply.lost,
        )

    def read_text(self, path: str) -> str | None:
        return self.files.get(path)


@dataclass
class FakeBuild:
    selftests_dir: Path
    selftests: dict[str, str]
    driver: str | None = None
    bzimage: Path = Path("/nonexistent/bzImage")
    vmlinux: Path = Path("/nonexistent/vmlinux")
    manifest: Path = Path("/nonexistent/manifest.json")
    commit: str = "0123456789ab"
    describe: str = "v7.3"
    config_hash: str = "cafe"
    durations: dict[str, float] = field(default_factory=lambda: {"kernel": 1.0})

    @property
    def make_seconds(self) -> float:  # KernelBuild's: the runner accounts it as "make"
        return sum(self.durations.values())


def fake_build(tmp: Path, statuses: dict[str, str], driver: str | None = None) -> FakeBuild:
    root = tmp / "selftests"
    for name, status in statuses.items():
        if status == "built":
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(b"\x7fELF")
    if driver:
        (root / driver).parent.mkdir(parents=True, exist_ok=True)
        (root / driver).write_text("#!/usr/bin/env python3\n")
    return FakeBuild(root, statuses, driver)


class FakeMachine:
    def __init__(self, run_dir: Path) -> None:
        self.console_log = run_dir / "console.log"
        self.console_log.write_text("[    0.000000] Linux version 7.3.0\n")
        self.accel, self.cpu_model, self.nested = "tcg", "max", True
        self.qemu_argv = ["qemu-system-x86_64", "-kernel", "bzImage"]
        # The real boot() writes the command line into the run folder (test_qemu_boot).
        (run_dir / "qemu-cmdline.txt").write_text(" ".join(self.qemu_argv) + "\n")
        self.boot_seconds = 8.0
        self.dead = False
        # What health() says: None while fine (tests set a paused state).
        self.state: str | None = None

    def __enter__(self) -> FakeMachine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.dead = True

    def alive(self) -> bool:
        return not self.dead

    def wait_exit(self, timeout: float) -> int | None:
        return None

    def health(self) -> str | None:
        return "QEMU exited with status 0" if self.dead else self.state

    def crash(self) -> list[Crash] | None:
        return scan(self.console_log.read_text()) or None

    def endpoint(self) -> Endpoint:
        return Endpoint("127.0.0.1", 10022, "root", FakeImage.client_key, FakeImage.host_key_line)

    def summary(self) -> str:
        return f"{self.accel}, nested={self.nested}, boot {self.boot_seconds:.1f}s"

    def environment(self) -> dict[str, object]:
        return {"accelerator": self.accel, "cpu_model": self.cpu_model, "nested": self.nested}


@dataclass
class FakeImage:
    base_qcow2: Path = Path("/cache/base.qcow2")
    recipe_hash: str = "705655cfb9bb69fd"
    client_key: Path = Path("/cache/keys/lab")
    host_key_line: str = "ssh-ed25519 AAAA"
    build_seconds: float = 0.0
