"""The host stage: one cell on a machine from lab.yaml's `hosts:` instead of the lab VM.

The runner (harness/runner.py) calls run_on_host for any target other than "qemu". In
order, each step timed into summary.json:

    host      connect through the user's SSH config, probe the host's own kernel (stored
              in the run's environment and host.json), check lab.yaml's declared
              capabilities against it (a mismatch is an error naming both), check kexec,
              take the host's lock (--wait S waits for another run's)
              -> a cell whose config needs a capability the MACHINE lacks ends here:
                 every suite `skip` with "host X lacks TDX: <reason>", nothing built
    build     as for the VM
    deploy    kexec the built bzImage with the host's command line plus the host's
              cmdline_extra (and kvm_intel.tdx=1 for a TDX cell), wait for SSH, verify
              /proc/version and the build id against the build's vmlinux, re-probe
              -> a kernel that does not come back: a `crash` result (exit 1), the
                 suites missing, the host restored
              -> a cell needing a capability the TEST KERNEL lacks: every suite `skip`
    push, suites  exactly as in the VM (harness/run_stages.py, harness/run_suites.py)
    shutdown  restore: reboot into the host's default kernel and wait for it
              (`restore: never` leaves it), release the lock; on the way out of any
              error, Ctrl-C or SIGTERM too, because the session is on the runner's
              ExitStack

Which cells need what: a config set's `needs:` in lab.yaml (e.g. the tdx config set
has `needs: [tdx]`); nothing else is inferred. The lab VM target ignores `needs`
(its guest suite skips what the VM lacks by probing).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from harness import crash
from harness.cellrun import CellRun, console_tail
from harness.config import HostSpec, LabConfig, SuiteSpec
from harness.errors import UserError
from harness.hosts import deploy, identity
from harness.hosts.console import ConsoleCapture
from harness.hosts.shell import Connector, NotReachable
from harness.hosts.stage import HostSession
from harness.hosts.target import HostTarget
from harness.remote import Endpoint
from harness.results import Outcome, TestResult
from harness.run_request import RunRequest
from harness.run_stages import do_build, do_connect
from harness.run_suites import do_suites

# Kernel parameters a cell adds for what its config needs (kvm_intel.tdx is 0444 and
# off by default: a TDX cell's kernel must be booted with it).
NEED_PARAMS: dict[str, tuple[str, ...]] = {"tdx": ("kvm_intel.tdx=1",)}


def host_target(lab: LabConfig, name: str) -> HostTarget:
    spec: HostSpec | None = lab.hosts.get(name)
    if spec is None:
        known = ", ".join(["qemu", *sorted(lab.hosts)])
        raise UserError(
            f"unknown target {name!r} (known: {known})",
            "pass --target qemu or a name from hosts: in lab.yaml",
        )
    return HostTarget(
        name=name,
        ssh=spec.ssh,
        workdir=spec.workdir,
        capabilities=tuple(spec.capabilities),
        console=tuple(spec.console),
        reset=tuple(spec.reset),
        restore=spec.restore,
        boot_timeout_s=float(spec.boot_timeout_s),
        cmdline_extra=tuple(spec.cmdline_extra),
        initrd=spec.initrd,
    )


def needs_of(lab: LabConfig, config: str) -> tuple[str, ...]:
    spec = lab.configs.get(config)
    return tuple(spec.needs) if spec is not None else ()


class HostBooted:
    """The BootedTarget of a host running the test kernel (harness/targets.py).

    alive() is what is known without asking; wait_exit() asks the host whether the test
    kernel's boot still answers, and remembers when it does not (it hung, or panicked
    and rebooted with panic=30). The console command, if lab.yaml gives one, keeps
    writing console.log while the suites run, so crash() sees a panic there.
    """

    def __init__(
        self, target: HostTarget, boot: deploy.Boot, console_log: Path, connect: Connector
    ) -> None:
        self.target = target
        self.boot = boot
        self.console_log = console_log
        self.boot_seconds = boot.seconds
        self._connect = connect
        self._gone = False

    def endpoint(self) -> Endpoint:
        return self.target.endpoint()

    def alive(self) -> bool:
        return not self._gone

    def wait_exit(self, timeout: float) -> int | None:
        """None while the test kernel's boot answers SSH; 1 once it does not."""
        try:
            shell = self._connect(timeout)
        except NotReachable:
            self._gone = True
            return 1
        try:
            ran = shell.run(["cat", "/proc/sys/kernel/random/boot_id"], timeout_s=30)
        finally:
            shell.close()
        lines = ran.stdout.splitlines()
        self._gone = not ran.ok or not lines or lines[0].strip() != self.boot.boot_id
        return 1 if self._gone else None

    def health(self) -> str | None:
        """Quick (no SSH): None unless wait_exit found the test kernel's boot gone."""
        if not self._gone:
            return None
        return f"{self.target.name} no longer runs the test kernel (it rebooted or hangs)"

    def crash(self) -> list[crash.Crash] | None:
        try:
            text = self.console_log.read_text(errors="replace")
        except OSError:
            return None
        return crash.scan(text) or None

    def summary(self) -> str:
        return f"host {self.target.name}, {self.boot.detail}, up in {self.boot.seconds:.1f}s"

    def environment(self) -> dict[str, object]:
        return {
            "deployed_kernel": self.boot.proc_version,
            "deploy": self.boot.detail,
            "deploy_cmdline": self.boot.cmdline,
        }


def run_on_host(
    cr: CellRun,
    lab: LabConfig,
    stack: contextlib.ExitStack,
    chosen: dict[str, SuiteSpec],
    req: RunRequest,
) -> tuple[bool, str]:
    """The cell on req.target (a host), up to its suites; (complete, why not). The
    session's restore and release run when the runner closes stack."""
    target = host_target(lab, req.target)
    needs = needs_of(lab, req.config)
    # Registered first, so it runs last: after the session restored the host.
    session = HostSession(target, run_id=cr.rec.run_id, run_dir=cr.rec.cell_dir, wait_s=req.wait_s)
    stack.callback(_record_restore, cr, session)
    with cr.stage("host", f"{target.name} ({target.ssh})") as entry:
        stack.enter_context(session)
        assert session.host_probe is not None
        entry["note"] = f"({session.host_probe.release}; locked)"
    cr.rec.environment(
        host=target.name,
        host_kernel=session.host_probe.proc_version,
        host_probe=session.host_probe.to_json(),
    )
    for need in needs:
        why_not = session.lacks(need, machine=True)
        if why_not is not None:
            _skip_all(cr, chosen, why_not)
            return True, ""
    do_build(cr, lab, req)
    image = req.bzimage or (cr.build.bzimage if cr.build is not None else None)
    assert image is not None
    vmlinux = cr.build.vmlinux if cr.build is not None else None
    under_test = identity.kernel_under_test(image, vmlinux)
    params = [p for need in needs for p in NEED_PARAMS.get(need, ())]
    with cr.stage("deploy", f"kexec {image.name} on {target.name}") as entry:
        boot = session.deploy(under_test, params)
        entry["note"] = f"({boot.status}: {boot.detail})"
    cr.rec.account("boot", boot.seconds)
    booted = HostBooted(target, boot, cr.rec.cell_dir / "console.log", session.connect)
    cr.target = booted
    cr.rec.environment(**booted.environment())
    if boot.outcome is not None:
        _boot_failed(cr, chosen, target, boot)
        return False, f"the test kernel did not boot on {target.name}: {boot.status}"
    for need in needs:
        why_not = session.lacks(need)
        if why_not is not None:
            _skip_all(cr, chosen, why_not)
            return True, ""
    if target.console:
        stack.enter_context(ConsoleCapture(target.console, booted.console_log))
    do_connect(cr, lab, stack, chosen)
    complete = do_suites(cr, chosen)
    return complete, "" if complete else (cr.lost_reason or f"{target.name} was lost")


def _skip_all(cr: CellRun, chosen: dict[str, SuiteSpec], why: str) -> None:
    cr.progress.say(f"[host] {why}: every suite skips")
    for name, spec in chosen.items():
        cr.rec.add(TestResult(name, "(suite)", Outcome.SKIP, why))
        cr.rec.suite_done(name, kind=spec.kind, seconds=0.0)


def _boot_failed(
    cr: CellRun, chosen: dict[str, SuiteSpec], target: HostTarget, boot: deploy.Boot
) -> None:
    """The test kernel did not come back (crash) or is not the build (error)."""
    assert boot.outcome is not None
    found = list(boot.crashes)
    excerpt = (
        crash.report(found, limit=60) if found else console_tail(cr.rec.cell_dir / "console.log")
    )
    log = cr.rec.cell_dir / "console.log"
    cr.rec.add(
        TestResult(
            "boot",
            f"kexec on {target.name}",
            boot.outcome,
            boot.detail,
            seconds=round(boot.seconds, 2),
            excerpt=excerpt,
            log=cr.rec.relative(log) if log.exists() else None,
        )
    )
    cr.rec.suite_done("boot", kind="boot")
    for name, spec in chosen.items():
        why = f"not run: the test kernel did not boot on {target.name}"
        cr.rec.add(TestResult(name, "(suite)", Outcome.MISSING, why))
        cr.rec.suite_done(name, kind=spec.kind, seconds=0.0)


def _record_restore(cr: CellRun, session: HostSession) -> None:
    """After the session ended: how the host was left, in the environment and, when it
    was not brought back, as an error result (someone must look at the host)."""
    r = session.restored
    if r is None:
        return
    cr.rec.account("boot", r.seconds)  # a reboot, not harness overhead
    cr.rec.environment(
        host_restore=f"{r.status}: {r.detail} ({r.seconds:.0f}s)",
        host_kernel_after=r.proc_version,
        host_lock=session.released,
    )
    cr.progress.say(f"[restore] {r.status}: {r.detail} {r.proc_version}".rstrip())
    if r.status == "failed":
        cr.rec.add(
            TestResult(
                "host",
                f"restore {session.target.name}",
                Outcome.ERROR,
                f"the host was not brought back on its default kernel: {r.detail}",
            )
        )
