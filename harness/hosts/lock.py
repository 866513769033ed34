"""One run per host: a lock file on the host, taken and released over SSH.

The lock is /run/gmemlab.lock on the host, one line of JSON: run id, user, this lab
machine's hostname and pid, start time, and the host's boot id. Every change to it
happens in one constant remote script under flock(1) on a guard file next to it, so
two labs can never both believe they hold it, and a stale lock is replaced only if it
still holds exactly what this run judged stale.

Stale means the holder cannot still be using the host:
- the host's boot id differs from the lock's: the host rebooted since;
- the holder ran on this same lab machine and its pid is gone.
A holder on another lab machine is never presumed dead: the second run fails at once,
naming it (or, with wait_s, waits for it).

Kexec: /run is a tmpfs, so the lock vanishes with the kexec that deploys the test
kernel. To close that window the deploy step puts `gmemlab.run=<run id>` on the test
kernel's command line; a lab that finds that marker and no lock file treats the host as
held by that run (for kexec_grace_s after boot), and the run itself re-takes the lock
(`retake`) as soon as the test kernel answers. The restore reboot clears both.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Literal

from harness import names
from harness.errors import InfraError
from harness.hosts.shell import HostShell
from harness.proc import pid_alive

LOCK_PATH = "/run/gmemlab.lock"
# The kernel-command-line word that marks a host kexec'd by a run (see above).
RUN_MARKER = "gmemlab.run"

_TAKE = f"""\
set -u
set -f
lock=$1 body=$2 stale=$3 run=$4 proc=$5
command -v flock >/dev/null 2>&1 || {{ echo 'error: flock (util-linux) is missing'; exit 3; }}
# A failed redirection on `exec` ends a POSIX shell at once: try it in a subshell first.
( : >>"$lock.guard" ) 2>/dev/null || {{ echo "error: cannot write $lock.guard"; exit 3; }}
exec 9>>"$lock.guard"
flock -w 30 9 || {{ echo 'error: the lock guard stayed busy for 30s'; exit 3; }}
echo "boot_id $(cat "$proc/sys/kernel/random/boot_id")"
echo "uptime $(cut -d' ' -f1 "$proc/uptime")"
if [ -e "$lock" ]; then
  cur=$(cat "$lock")
  if [ -z "$stale" ] || [ "$cur" != "$stale" ]; then echo held; printf '%s\\n' "$cur"; exit 1; fi
else
  for w in $(cat "$proc/cmdline"); do
    case $w in
      {RUN_MARKER}=*)
        m=${{w#{RUN_MARKER}=}}
        if [ "$m" != "$run" ] && [ "kexec:$m" != "$stale" ]; then echo kexec; echo "$m"; exit 1; fi
        ;;
    esac
  done
fi
tmp=$(mktemp "$lock.XXXXXX") || {{ echo "error: cannot create a file next to $lock"; exit 3; }}
if printf '%s\\n' "$body" > "$tmp" && mv -f "$tmp" "$lock"; then echo acquired; exit 0; fi
rm -f "$tmp"; echo "error: cannot write $lock"; exit 3
"""

_RELEASE = """\
set -u
lock=$1 body=$2
( : >>"$lock.guard" ) 2>/dev/null || exit 3
exec 9>>"$lock.guard"
flock -w 30 9 || exit 3
if [ ! -e "$lock" ]; then echo gone; exit 0; fi
cur=$(cat "$lock")
if [ "$cur" = "$body" ]; then rm -f "$lock"; echo released; exit 0; fi
echo other; printf '%s\\n' "$cur"
"""


@dataclass(frozen=True)
class LockOwner:
    run_id: str
    user: str
    lab_host: str
    pid: int
    started: str
    boot_id: str

    def line(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def parse(cls, text: str) -> LockOwner | None:
        try:
            data = json.loads(text)
            return cls(
                run_id=str(data["run_id"]),
                user=str(data["user"]),
                lab_host=str(data["lab_host"]),
                pid=int(data["pid"]),
                started=str(data["started"]),
                boot_id=str(data["boot_id"]),
            )
        except (ValueError, TypeError, KeyError):
            return None

    def describe(self) -> str:
        return (
            f"run {self.run_id} of {self.user} on {self.lab_host} (pid {self.pid}), "
            f"since {self.started}"
        )


@dataclass(frozen=True)
class Lease:
    """A lock this run holds."""

    path: str
    owner: LockOwner


class HostBusy(InfraError):
    """Another run holds the host."""


@dataclass(frozen=True)
class Reply:
    state: Literal["acquired", "held", "kexec", "error"]
    boot_id: str = ""
    uptime_s: float | None = None
    # held: the lock file's text; kexec: the marker's run id; error: the message.
    payload: str = ""


_STATES: dict[str, Literal["acquired", "held", "kexec"]] = {
    "acquired": "acquired",
    "held": "held",
    "kexec": "kexec",
}


def parse_reply(stdout: str) -> Reply:
    """The take script's answer (pure)."""
    boot_id = ""
    uptime = None
    lines = stdout.splitlines()
    for index, line in enumerate(lines):
        word, _, rest = line.partition(" ")
        if word == "boot_id":
            boot_id = rest.strip()
        elif word == "uptime":
            try:
                uptime = float(rest)
            except ValueError:
                uptime = None
        elif line in _STATES:
            payload = "\n".join(lines[index + 1 :]).strip()
            return Reply(_STATES[line], boot_id, uptime, payload)
        elif line.startswith("error: "):
            return Reply("error", boot_id, uptime, line.removeprefix("error: "))
    return Reply("error", boot_id, uptime, stdout.strip()[-300:] or "no answer")


def stale_reason(
    holder: LockOwner, *, boot_id: str, lab_host: str, pid_alive: Callable[[int], bool]
) -> str | None:
    """Why holder cannot still be using the host, or None if it may be."""
    if holder.boot_id != boot_id:
        return f"the host rebooted since it was taken (boot id {holder.boot_id} -> {boot_id})"
    if holder.lab_host == lab_host and not pid_alive(holder.pid):
        return f"its process {holder.pid} on this machine ({lab_host}) is gone"
    return None


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _say(text: str) -> None:
    print(f"  {text}", file=sys.stderr)


class HostLock:
    """Takes, re-takes and releases the lock of one host."""

    def __init__(
        self,
        path: str = LOCK_PATH,
        *,
        host: str = "host",
        lab_host: str | None = None,
        user: str | None = None,
        pid: int | None = None,
        pid_alive: Callable[[int], bool] = pid_alive,
        kexec_grace_s: float = 900.0,
        poll_s: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], str] = _now,
        say: Callable[[str], None] = _say,
        proc: str = "/proc",
    ) -> None:
        self.path = path
        self.host = host
        self.lab_host = lab_host or socket.gethostname()
        self.user = user or getpass.getuser()
        self.pid = os.getpid() if pid is None else pid
        self.pid_alive = pid_alive
        self.kexec_grace_s = kexec_grace_s
        self.poll_s = poll_s
        self.clock = clock
        self.sleep = sleep
        self.now = now
        self.say = say
        # Where the host's /proc is: tests point it at a folder of fake files.
        self.proc = proc

    def owner(self, run_id: str, boot_id: str) -> LockOwner:
        if names.slug(run_id) != run_id:
            raise ValueError(f"run id {run_id!r} is not a safe word for a kernel command line")
        return LockOwner(run_id, self.user, self.lab_host, self.pid, self.now(), boot_id)

    def acquire(self, shell: HostShell, run_id: str, boot_id: str, *, wait_s: float = 0.0) -> Lease:
        """Take the host's lock, replacing a stale one; HostBusy when another run holds
        it (after waiting up to wait_s for it)."""
        owner = self.owner(run_id, boot_id)
        deadline = self.clock() + wait_s
        waiting = False
        stale = ""
        for _ in range(10_000):
            reply = self._take(shell, owner, stale)
            if reply.state == "acquired":
                if reply.boot_id and reply.boot_id != owner.boot_id:
                    # The host rebooted since the caller read its boot id: rewrite the
                    # lock with the real one.
                    stale = owner.line()
                    owner = replace(owner, boot_id=reply.boot_id)
                    continue
                return Lease(self.path, owner)
            verdict, busy = self._judge(reply, run_id)
            if verdict is not None:
                self.say(f"{self.host}: taking over a stale lock: {verdict}")
                stale = reply.payload if reply.state == "held" else f"kexec:{reply.payload}"
                continue
            stale = ""
            if self.clock() >= deadline:
                raise HostBusy(
                    f"{self.host} is in use: {busy}",
                    "wait for it (lab run --wait) or pick another host; if that run is "
                    f"gone, remove {self.path} on the host",
                )
            if not waiting:
                self.say(f"{self.host}: waiting for {busy}")
                waiting = True
            self.sleep(min(self.poll_s, max(0.0, deadline - self.clock())))
        raise InfraError(f"{self.host}: the host lock never settled", "retry the run")

    def retake(self, shell: HostShell, lease: Lease, boot_id: str) -> Lease:
        """Take the lock again after the kexec'd kernel answers (its /run is new)."""
        try:
            return self.acquire(shell, lease.owner.run_id, boot_id)
        except HostBusy as exc:
            raise HostBusy(
                f"{self.host}: lost the host lock during the kexec: {exc.what}",
                "another lab took the host while the test kernel booted; rerun later",
            ) from None

    def release(self, shell: HostShell, lease: Lease) -> str:
        """Remove the lock if it is still ours; never raises (it runs in a finally).
        Returns what happened: released, gone (the reboot took it), other, failed."""
        try:
            ran = shell.run(
                ["sh", "-c", _RELEASE, "gmemlab-unlock", lease.path, lease.owner.line()],
                timeout_s=60,
            )
        except Exception as exc:  # the host may be gone; the lock then goes with it
            return f"failed: {exc}"
        first, _, rest = ran.stdout.strip().partition("\n")
        if first == "other":
            holder = LockOwner.parse(rest)
            who = holder.describe() if holder else rest[:200]
            self.say(f"{self.host}: not releasing the lock, it is now held by {who}")
            return f"other: {who}"
        if first in ("released", "gone"):
            return first
        return f"failed: {ran.error or ran.stderr.strip() or f'exit {ran.exit_code}'}"

    # --- inside ----------------------------------------------------------------------

    def _take(self, shell: HostShell, owner: LockOwner, stale: str) -> Reply:
        argv = ["sh", "-c", _TAKE, "gmemlab-lock", self.path, owner.line(), stale, owner.run_id]
        argv.append(self.proc)
        ran = shell.run(argv, timeout_s=60)
        if ran.lost or ran.timed_out:
            raise InfraError(
                f"{self.host}: taking the host lock failed: {ran.error or 'timed out'}",
                "check the host is up and reachable",
            )
        reply = parse_reply(ran.stdout)
        if reply.state == "error":
            raise InfraError(
                f"{self.host}: cannot take the host lock {self.path}: {reply.payload}",
                "the lab needs root on the host (kexec, /run) and util-linux's flock",
            )
        return reply

    def _judge(self, reply: Reply, run_id: str) -> tuple[str | None, str]:
        """(why the holder is stale, or None; who holds the host)."""
        if reply.state == "kexec":
            who = f"run {reply.payload}, which kexec'd a test kernel and has not re-locked"
            up = reply.uptime_s
            if up is not None and up > self.kexec_grace_s:
                return f"{who} for {up:.0f}s", who
            return None, who
        holder = LockOwner.parse(reply.payload)
        if holder is None:
            return None, f"an unreadable lock {self.path}: {reply.payload[:200]!r}"
        if holder.run_id == run_id:
            return "it is this run's own lock from before the reboot", holder.describe()
        why = stale_reason(
            holder, boot_id=reply.boot_id, lab_host=self.lab_host, pid_alive=self.pid_alive
        )
        return why, holder.describe()
