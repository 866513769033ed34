"""One run's use of one host, in order, with restore and release in a finally.

    with HostSession(target, run_id=..., run_dir=...) as host:  # connect, probe, check, lock
        boot = host.deploy(kernel, params)     # kexec, wait, verify, re-lock, re-probe
        if boot.outcome is not None: ...       # crash / error: record it, no suites
        skip = host.lacks("tdx")               # a cell's skip reason, or None
        host.shell                             # a session to the test kernel, for suites
    # on the way out, also after an error or Ctrl-C: restore (unless `restore: never`),
    # release the lock, write host.json into run_dir

The probe of the host's own kernel decides what the machine can do (declared
capabilities, kexec); the probe of the test kernel after the kexec decides what a cell
can use (a TDX cell skips with that probe's reason).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from harness.errors import InfraError, UserError
from harness.hosts import deploy, probe, restore, wait
from harness.hosts.lock import HostLock, Lease
from harness.hosts.probe_state import HostProbe
from harness.hosts.shell import Connector, HostShell, NotReachable, ssh_connector
from harness.hosts.target import HostTarget


class HostSession:
    def __init__(
        self,
        target: HostTarget,
        *,
        run_id: str,
        run_dir: Path,
        connect: Connector | None = None,
        lock: HostLock | None = None,
        wait_s: float = 0.0,
        connect_s: float = 60.0,
        clock: wait.Clock = wait.REAL_CLOCK,
        run_local: Callable[[Sequence[str]], int] | None = None,
    ) -> None:
        self.target = target
        self.run_id = run_id
        self.run_dir = run_dir
        self.connect = connect or ssh_connector(target.endpoint())
        self.lock = lock or HostLock(target.lock_path, host=target.name)
        self.wait_s = wait_s
        self.connect_s = connect_s
        self.clock = clock
        self.run_local = run_local
        self.shell: HostShell | None = None
        self.host_probe: HostProbe | None = None
        self.kernel_probe: HostProbe | None = None
        self.lease: Lease | None = None
        self.boot: deploy.Boot | None = None
        self.kernel: deploy.KernelUnderTest | None = None
        self.restored: restore.Restored | None = None
        self.released = ""

    # --- entering: connect, probe, check, lock --------------------------------------------

    def __enter__(self) -> HostSession:
        try:
            self.shell = self.connect(self.connect_s)
        except NotReachable as exc:
            raise InfraError(
                f"host {self.target.name} ({self.target.ssh}) does not answer SSH: {exc.what}",
                "check that it is up and that `ssh " + self.target.ssh + "` works",
            ) from None
        try:
            found = probe.run(self.shell)
            self.host_probe = found
            found.check_declared(self.target.capabilities, self.target.name)
            ok, why = found.capability("kexec")
            if not ok:
                raise UserError(
                    f"hosts.{self.target.name}: the kernel cannot be deployed by kexec: {why}",
                    "fix the host (kexec-tools, kexec_load_disabled, lockdown)",
                )
            self.lease = self.lock.acquire(
                self.shell, self.run_id, found.boot_id, wait_s=self.wait_s
            )
        except BaseException:
            self._finish()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._finish()

    # --- the run ---------------------------------------------------------------------------

    def deploy(
        self,
        kernel: deploy.KernelUnderTest,
        params: Sequence[str] = (),
    ) -> deploy.Boot:
        """Kexec kernel with params; re-take the lock and probe the test kernel."""
        if self.shell is None or self.host_probe is None or self.lease is None:
            raise InfraError("deploy() outside a HostSession's `with`", "a harness bug")
        # From here on the host may be on another kernel: the finally restores it.
        self.kernel = kernel
        boot, self.shell = deploy.kexec_boot(
            self.shell,
            self.connect,
            self.host_probe,
            self.target,
            kernel,
            params=params,
            run_id=self.run_id,
            console_log=self.run_dir / "console.log",
            clock=self.clock,
        )
        self.boot = boot
        if self.shell is not None:
            self.lease = self.lock.retake(self.shell, self.lease, boot.boot_id)
            if boot.outcome is None:
                self.kernel_probe = probe.run(self.shell)
        return boot

    def lacks(self, capability: str, *, machine: bool = False) -> str | None:
        """Why a cell needing capability must skip on this host, or None: on the test
        kernel once deployed, else on the host's own; machine=True asks whether the
        machine can do it at all (with a suitable kernel), from the host's own probe."""
        found = self.host_probe if machine else self.kernel_probe or self.host_probe
        if found is None:
            return f"host {self.target.name} was not probed"
        check = found.platform if machine else found.capability
        ok, why = check(capability)
        return None if ok else f"host {self.target.name} lacks {capability.upper()}: {why}"

    def environment(self) -> dict[str, Any]:
        """What the run records about the host."""
        return {
            "host": self.target.name,
            "ssh": self.target.ssh,
            "probe": self.host_probe.to_json() if self.host_probe else None,
            "test_kernel_probe": self.kernel_probe.to_json() if self.kernel_probe else None,
            "boot": _boot_json(self.boot),
            "restore": asdict(self.restored) if self.restored else None,
            "lock": {"path": self.target.lock_path, "released": self.released},
        }

    # --- leaving ---------------------------------------------------------------------------

    def _finish(self) -> None:
        try:
            if self.kernel is not None:
                shell, self.shell = self.shell, None  # restore closes it
                self.restored = restore.restore(
                    shell,
                    self.connect,
                    self.target,
                    systemd=bool(self.host_probe and self.host_probe.systemd),
                    test_version=self.kernel.expect_version,
                    clock=self.clock,
                    run_local=self.run_local,
                    run_id=self.run_id,
                )
        finally:
            self._release()
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "host.json").write_text(json.dumps(self.environment(), indent=2))

    def _release(self) -> None:
        """Release the lock if it is still there (a reboot takes it along); never raises
        for the host's state."""
        shell, self.shell = self.shell, None
        if self.lease is None:
            self.released = "not taken"
        else:
            if shell is None:
                try:
                    shell = self.connect(min(30.0, self.connect_s))
                except InfraError as exc:
                    self.released = f"host unreachable ({exc.what}): the lock dies with its boot"
            if shell is not None:
                self.released = self.lock.release(shell, self.lease)
        if shell is not None:
            shell.close()


def _boot_json(boot: deploy.Boot | None) -> dict[str, Any] | None:
    if boot is None:
        return None
    return {
        "status": str(boot.status),
        "outcome": str(boot.outcome) if boot.outcome else None,
        "detail": boot.detail,
        "seconds": round(boot.seconds, 1),
        "cmdline": boot.cmdline,
        "proc_version": boot.proc_version,
        "console_log": str(boot.console_log) if boot.console_log else None,
        "crashes": [c.describe() for c in boot.crashes],
    }
