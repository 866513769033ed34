"""Waiting for a host to come back: new SSH sessions until one answers on a boot other
than the old one (after a kexec, a reboot or a reset), within a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from harness.hosts.shell import Connector, HostShell, NotReachable

_BOOT_FACTS = ["cat", "/proc/sys/kernel/random/boot_id", "/proc/version"]


@dataclass(frozen=True)
class Clock:
    """Time and the pace of waiting for a host, injectable for tests."""

    now: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    # Between two tries to reach a host that is coming back, and the most one try takes.
    poll_s: float = 5.0
    attempt_s: float = 30.0


REAL_CLOCK = Clock()


def wait_for_boot(
    connect: Connector,
    *,
    old_boot_id: str,
    deadline_s: float,
    clock: Clock = REAL_CLOCK,
) -> tuple[HostShell, str, str] | None:
    """A session to the host once it runs a boot other than old_boot_id, with its boot
    id and /proc/version; None when the deadline passes first."""
    end = clock.now() + deadline_s
    while (left := end - clock.now()) > 0:
        try:
            shell = connect(min(left, clock.attempt_s))
        except NotReachable:
            continue
        facts = boot_facts(shell)
        if facts is not None and facts[0] != old_boot_id:
            return shell, *facts
        # The old kernel is still shutting down, or the new one is half up.
        shell.close()
        clock.sleep(min(clock.poll_s, max(0.0, end - clock.now())))
    return None


def boot_facts(shell: HostShell) -> tuple[str, str] | None:
    """(boot id, /proc/version) of a live session, None when it is dead."""
    ran = shell.run(_BOOT_FACTS, timeout_s=30)
    lines = ran.stdout.splitlines()
    if ran.ok and len(lines) >= 2:
        return lines[0].strip(), lines[1].strip()
    return None
