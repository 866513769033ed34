"""The run's stages before and after the suites: build, image + boot, connect + push,
and collect. Each takes the CellRun and what it needs by value, and fills in the next
field of the CellRun; the runner orders them and owns the ExitStack that tears the VM
and the SSH session down."""

from __future__ import annotations

import contextlib
import shlex
from pathlib import Path

from harness import build as build_stage
from harness import history_record, image, suites
from harness.cellrun import CellRun
from harness.config import LabConfig, SuiteSpec
from harness.paths import REPO_ROOT
from harness.qemu import boot as qemu_boot
from harness.qemu.machine import OVERLAY, QMP_SOCKET
from harness.remote import Remote
from harness.results import TestResult
from harness.suites.dmesg import dmesg_verdict


def do_build(
    cr: CellRun,
    lab: LabConfig,
    kernel: str,
    config: str,
    manifest: Path | None,
    bzimage: Path | None,
    *,
    target: str = "qemu",
) -> None:
    if manifest is not None:
        with cr.stage("build", f"reusing {manifest}") as entry:
            cr.build = build_stage.load_build(manifest)
            entry["note"] = f"({cr.build.describe})"
    elif bzimage is not None:
        with cr.stage("build", f"reusing {bzimage} (no manifest: no selftests)"):
            cr.build = None
    else:
        with cr.stage("build", f"{kernel}/{config}") as entry:
            request = build_stage.prepare_request(lab, kernel, config)
            cr.build = build_stage.build_kernel(request)
            entry["note"] = f"({cr.build.describe})"
        cr.rec.account("make", cr.build.make_seconds)
    b = cr.build
    if b is not None:
        cr.rec.environment(
            kernel=kernel,
            config=config,
            target=target,
            kernel_commit=b.commit,
            kernel_describe=b.describe,
            config_hash=b.config_hash,
            manifest=str(b.manifest),
            selftests=", ".join(f"{k}: {v}" for k, v in sorted(b.selftests.items())),
            # dirty, diff hash, mbox: the source identity the history groups runs by.
            **history_record.build_identity(b.manifest),
        )
    else:
        cr.rec.environment(kernel=kernel, config=config, target=target)


def do_boot(
    cr: CellRun,
    lab: LabConfig,
    bzimage: Path,
    stack: contextlib.ExitStack,
    network: bool = False,
) -> None:
    with cr.stage("image") as entry:
        img = image.ensure_image(lab)
        entry["note"] = f"({img.recipe_hash[:12]})"
    cr.rec.account("image-build", img.build_seconds)

    def retrying(why: str) -> None:
        cr.progress.say(f"[boot] {why}: QEMU failed, not the kernel: booting once more")

    with cr.stage("boot") as entry:
        machine = stack.enter_context(
            qemu_boot.boot(
                lab, bzimage, img, cr.rec.cell_dir, tether=True, network=network, on_retry=retrying
            )
        )
        cr.target = machine
        entry["note"] = f"({machine.summary()})"
    cr.rec.account("boot", machine.boot_seconds)
    cr.rec.environment(**machine.environment())


def do_connect(
    cr: CellRun, lab: LabConfig, stack: contextlib.ExitStack, chosen: dict[str, SuiteSpec]
) -> None:
    assert cr.target is not None
    with cr.stage("push") as entry:
        # The target's health (QEMU's run state) is watched while every command runs.
        remote = stack.enter_context(Remote(cr.target.endpoint(), watch=cr.target.health))
        cr.remote = remote
        remote.connect(deadline_s=float(lab.vm.boot_timeout_s))
        items = suites.payload(chosen, cr.build, REPO_ROOT)
        sent = remote.push(items, suites.PAYLOAD)
        entry["note"] = f"({len(items)} items, {sent / 1e6:.1f} MB in one tar stream)"
        uname = remote.run(["uname", "-r"], timeout_s=30)
        cr.rec.environment(guest_kernel=uname.stdout.strip())
    check_boot_dmesg(cr)


def check_boot_dmesg(cr: CellRun) -> None:
    """A WARN or BUG while booting is a kernel problem too: its own result."""
    text = cr.dmesg()
    if text is None:
        return
    log = cr.rec.cell_dir / "dmesg-boot.txt"
    log.write_text(text)
    verdict = dmesg_verdict(text.splitlines())
    if verdict is not None:
        cr.rec.add(
            TestResult(
                "boot",
                verdict.name,
                verdict.outcome,
                verdict.reason.replace("during the suite", "while booting"),
                excerpt=verdict.excerpt,
                log=cr.rec.relative(log),
            )
        )
        cr.rec.suite_done("boot", kind="boot")


def collect(cr: CellRun, reproducer: list[str]) -> None:
    """Copy what the VM left behind into the cell folder; never raises (a full disk
    included: the summary is written after this, into space the recorder set aside)."""
    cell = cr.rec.cell_dir
    t = cr.target
    with contextlib.suppress(Exception):
        if t is not None:
            target = cell / "console.log"
            if t.console_log.exists() and t.console_log.resolve() != target.resolve():
                target.write_bytes(t.console_log.read_bytes())
    # The throwaway disk overlay and QMP socket are not results.
    for junk in (OVERLAY, QMP_SOCKET):
        with contextlib.suppress(OSError):
            if t is None or not t.alive():
                (cell / junk).unlink(missing_ok=True)
    script = cell / "reproduce.sh"
    with contextlib.suppress(OSError):
        script.write_text(
            "#!/bin/sh\n# Re-run this cell (same kernel build, same suites).\n"
            f"cd {shlex.quote(str(REPO_ROOT))} && exec {shlex.join(reproducer)}\n"
        )
        script.chmod(0o755)
