"""Stand-ins for a host, for the host stage's tests (harness/hosts)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from harness.remote import Ran


class ScriptedShell:
    """A HostShell whose answers come from reply(argv); every argv is recorded."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.closed = False

    def reply(self, argv: list[str], timeout_s: float) -> Ran:
        raise NotImplementedError

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout_s: float,
        cwd: str | None = None,
        log: Path | None = None,
    ) -> Ran:
        self.calls.append(list(argv))
        return self.reply(list(argv), timeout_s)

    def put(self, local: Path, remote_path: str) -> None:
        raise AssertionError(f"unexpected put of {local} to {remote_path}")

    def close(self) -> None:
        self.closed = True


class CannedShell(ScriptedShell):
    """Answers every command with the same Ran."""

    def __init__(self, ran: Ran) -> None:
        super().__init__()
        self.ran = ran

    def reply(self, argv: list[str], timeout_s: float) -> Ran:
        return self.ran


class LocalShell(ScriptedShell):
    """Runs argv on this machine: the host scripts for real, in a temporary folder
    instead of /run and /proc."""

    def reply(self, argv: list[str], timeout_s: float) -> Ran:
        start = time.monotonic()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
        return Ran(
            " ".join(argv), done.returncode, done.stdout, done.stderr, time.monotonic() - start
        )

    def put(self, local: Path, remote_path: str) -> None:
        Path(remote_path).write_bytes(local.read_bytes())


def fake_proc(root: Path, *, boot_id: str, uptime: float = 100.0, cmdline: str = "ro") -> str:
    """A folder shaped like the bits of /proc the host scripts read."""
    (root / "sys" / "kernel" / "random").mkdir(parents=True, exist_ok=True)
    (root / "sys" / "kernel" / "random" / "boot_id").write_text(boot_id + "\n")
    (root / "uptime").write_text(f"{uptime:.2f} 1234.00\n")
    (root / "cmdline").write_text(cmdline + "\n")
    return str(root)


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


DEFAULT_VERSION = "Linux version 7.3.4-1-amd64 (debian-kernel@lists.debian.org) #1 SMP Debian"
TEST_VERSION = "Linux version 7.3.4-lab (builder@lab) (gcc 14.2.0) #7 SMP PREEMPT_DYNAMIC"


class FakeHost:
    """A host whose kernel can be kexec'd, rebooted and reset, on a fake clock.

    on_kexec says what the loaded test kernel does: "boots" (answers SSH after
    boot_s), "hangs" (never answers) or "panics" (the host comes back on its default
    kernel after 2 * boot_s, as panic=30 makes it).
    """

    def __init__(self, clock: FakeClock, *, systemd: bool = True, on_kexec: str = "boots") -> None:
        self.clock = clock
        self.systemd = systemd
        self.on_kexec = on_kexec
        self.boot_s = 40.0
        self.boots = 1
        self.version = DEFAULT_VERSION
        self.up_at: float = 0.0
        self.loaded: list[str] | None = None
        self.files: dict[str, bytes] = {}
        self.calls: list[list[str]] = []
        self.notes_hex: str | None = None
        self.kexec_fails: str | None = None
        self.switch_returns_lost = True
        # With attach(): a folder standing in for the host's /run and /proc, and the
        # probe output of its default kernel and of the test kernel.
        self.root: Path | None = None
        self.probe_text = ""
        self.test_probe_text = ""
        self.cmdline = ""

    def attach(self, root: Path, probe_text: str, test_probe_text: str | None = None) -> None:
        from harness.hosts import probe_parse

        self.root = root
        self.probe_text = probe_text
        self.test_probe_text = test_probe_text or probe_text
        self.cmdline = probe_parse.parse(probe_text).cmdline
        self._new_boot_files()

    def _new_boot_files(self) -> None:
        if self.root is None:
            return
        run = self.root / "run"
        if run.exists():
            for f in run.iterdir():
                f.unlink()  # /run is a tmpfs: a boot starts it empty
        run.mkdir(parents=True, exist_ok=True)
        fake_proc(self.root / "proc", boot_id=self.boot_id, uptime=60.0, cmdline=self.cmdline)

    def probe_output(self) -> str:
        text = self.test_probe_text if self.version == TEST_VERSION else self.probe_text
        text = _set_section(text, "boot_id", self.boot_id)
        text = _set_section(text, "version", self.version)
        return _set_section(text, "cmdline", self.cmdline)

    @property
    def boot_id(self) -> str:
        return f"boot-{self.boots}"

    def _go(self, version: str | None, after: float, *, kexeced: bool = False) -> None:
        """The host goes down now and comes up `after` seconds later on version (None:
        never); kexeced: on the loaded kernel's command line, else on the boot
        loader's (the default one)."""
        self.boots += 1
        self.up_at = float("inf") if version is None else self.clock.now() + after
        self.version = version or ""
        if kexeced and self.loaded:
            self.cmdline = self.loaded[3].removeprefix("--command-line=")
        elif version is not None:
            from harness.hosts import probe_parse

            self.cmdline = probe_parse.parse(self.probe_text).cmdline if self.probe_text else ""
        self._new_boot_files()

    def connect(self, deadline_s: float) -> FakeShell:
        from harness.hosts.shell import NotReachable

        if self.clock.now() < self.up_at:
            self.clock.sleep(min(deadline_s, self.up_at - self.clock.now()))
        if self.clock.now() < self.up_at:
            raise NotReachable("no SSH connection within the deadline")
        return FakeShell(self, self.boots)

    def reset(self, argv: Sequence[str]) -> int:
        self.calls.append(["<local>", *argv])
        self._go(DEFAULT_VERSION, self.boot_s)
        return 0


def _set_section(text: str, section: str, value: str) -> str:
    """text with the first line of a probe section replaced by value."""
    head, sep, rest = text.partition(f"@@ {section}\n")
    _, _, tail = rest.partition("\n")
    return head + sep + value + "\n" + tail


class FakeShell(ScriptedShell):
    def __init__(self, host: FakeHost, boot: int) -> None:
        super().__init__()
        self.host = host
        self.boot = boot

    def _ran(self, argv: Sequence[str], code: int | None, out: str = "", err: str = "") -> Ran:
        return Ran(" ".join(argv), code, out, err, 0.1, lost=code is None)

    def reply(self, argv: list[str], timeout_s: float) -> Ran:
        h = self.host
        h.calls.append(argv)
        if self.boot != h.boots or h.clock.now() < h.up_at:
            return self._ran(argv, None)
        if argv[:2] == ["sh", "-c"] and argv[3] == "gmemlab-probe":
            return self._ran(argv, 0, h.probe_output())
        if argv[:2] == ["sh", "-c"] and argv[3] in ("gmemlab-lock", "gmemlab-unlock"):
            return LocalShell().run(argv, timeout_s=timeout_s)
        if argv[:2] == ["mkdir", "-p"] or argv[0] == "rm":
            return self._ran(argv, 0)
        if argv[0] == "mktemp":
            return self._ran(argv, 0, "/var/tmp/gmemlab/kexec.Ab12Cd\n")
        if argv[0].endswith("kexec") and argv[1] == "-l":
            if h.kexec_fails:
                return self._ran(argv, 1, err=h.kexec_fails)
            h.loaded = argv
            return self._ran(argv, 0)
        if argv in (["systemctl", "--no-block", "kexec"], ["systemctl", "--no-block", "reboot"]):
            kexec = argv[-1] == "kexec"
            assert h.systemd and (h.loaded or not kexec)
            if kexec:
                version = {"boots": TEST_VERSION, "hangs": None, "panics": DEFAULT_VERSION}
                after = h.boot_s * (2 if h.on_kexec == "panics" else 1)
                h._go(version[h.on_kexec], after, kexeced=h.on_kexec == "boots")
                h.loaded = None
            else:
                h._go(DEFAULT_VERSION, h.boot_s)
            return self._ran(argv, None if h.switch_returns_lost else 0)
        if argv == ["cat", "/proc/cmdline"]:
            return self._ran(argv, 0, h.cmdline + "\n")
        if argv[:2] == ["cat", "/proc/sys/kernel/random/boot_id"]:
            return self._ran(argv, 0, f"{h.boot_id}\n{h.version}\n")
        if argv[0] == "od":
            if h.notes_hex is None:
                return self._ran(argv, 1, err="od: /sys/kernel/notes: Permission denied")
            return self._ran(argv, 0, h.notes_hex)
        return self._ran(argv, 127, err=f"{argv[0]}: not found")

    def put(self, local: Path, remote_path: str) -> None:
        self.host.calls.append(["<put>", local.name, remote_path])
        self.host.files[remote_path] = local.read_bytes()
