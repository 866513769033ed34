"""Restore a host after a kexec deploy: reboot into its default kernel.

systemctl --no-block reboot (or a detached reboot without systemd), then wait until
the host answers on a kernel that is not the test kernel; an unreachable host is reset
with the optional reset command first. `restore: never` leaves the test kernel running.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from harness.errors import InfraError
from harness.hosts.cmdline import has_marker, reboot_argv
from harness.hosts.deploy import read_cmdline
from harness.hosts.shell import Connector, HostShell
from harness.hosts.target import HostTarget
from harness.hosts.wait import REAL_CLOCK, Clock, boot_facts, wait_for_boot


@dataclass(frozen=True)
class Restored:
    status: Literal["restored", "skipped", "failed"]
    detail: str
    seconds: float = 0.0
    proc_version: str = ""


def restore(
    shell: HostShell | None,
    connect: Connector,
    target: HostTarget,
    *,
    systemd: bool,
    test_version: str,
    deadline_s: float | None = None,
    clock: Clock = REAL_CLOCK,
    run_local: Callable[[Sequence[str]], int] | None = None,
    run_id: str | None = None,
) -> Restored:
    """Bring the host back on its default kernel. Says what happened; raises only for a
    broken reset command.

    "On the test kernel" means: the boot's command line carries the run's marker (with
    run_id; the kexec put it there, no boot loader does), else /proc/version contains
    test_version. The marker also tells the two apart when they are the same build."""

    def on_test_kernel(shell: HostShell, version: str) -> bool:
        cmdline = read_cmdline(shell) if run_id is not None else None
        if run_id is not None and cmdline is not None:
            return has_marker(cmdline, run_id)
        return test_version in version

    if target.restore == "never":
        return Restored("skipped", f"restore: never, {target.name} stays on the test kernel")
    deadline = deadline_s if deadline_s is not None else target.boot_timeout_s
    start = clock.now()

    def failed(detail: str) -> Restored:
        return Restored("failed", detail, clock.now() - start)

    facts = boot_facts(shell) if shell is not None else None
    if shell is not None and facts is not None:
        live, (boot_id, version) = shell, facts
    else:
        # The session died (a crash, a hang): reach the host anew, or reset it.
        if shell is not None:
            shell.close()
        back = wait_for_boot(connect, old_boot_id="", deadline_s=min(60.0, deadline), clock=clock)
        if back is None:
            if not target.reset:
                return failed(
                    f"{target.name} does not answer and has no reset command: power-cycle "
                    "it by hand (it boots its default kernel)"
                )
            code = (run_local or _run_local)(target.reset)
            back = wait_for_boot(connect, old_boot_id="", deadline_s=deadline, clock=clock)
            if back is None:
                return failed(
                    f"{target.name} did not answer within {deadline:.0f}s of its reset "
                    f"command (exit {code})"
                )
        live, boot_id, version = back
    if not on_test_kernel(live, version):
        live.close()
        return Restored("restored", "on its default kernel", clock.now() - start, version)
    ran = live.run(reboot_argv(systemd), timeout_s=60)
    live.close()
    if not (ran.ok or ran.lost or ran.timed_out):
        return failed(f"reboot failed: {(ran.stderr or ran.stdout).strip()[-300:]}")
    back = wait_for_boot(connect, old_boot_id=boot_id, deadline_s=deadline, clock=clock)
    if back is None:
        return failed(f"{target.name} did not answer within {deadline:.0f}s of its reboot")
    still = on_test_kernel(back[0], back[2])
    back[0].close()
    version = back[2]
    if still:
        return Restored(
            "failed",
            f"{target.name} came back on the test kernel ({version})",
            clock.now() - start,
            version,
        )
    return Restored("restored", "rebooted into its default kernel", clock.now() - start, version)


def _run_local(argv: Sequence[str]) -> int:
    try:
        return subprocess.run(
            list(argv), stdin=subprocess.DEVNULL, timeout=120, check=False
        ).returncode
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InfraError(f"reset command {argv[0]!r} failed: {exc}", "fix hosts.*.reset") from None
