"""The run's stages before and after the suites: build, image + boot, connect + push,
and collect. Each takes the CellRun and what it needs by value, and fills in the next
field of the CellRun; the runner orders them and owns the ExitStack that tears the VM
and the SSH session down."""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
from collections.abc import Sequence
from pathlib import Path

from harness import build as build_stage
from harness import history_record, image, names, suites
from harness.cellrun import CellRun
from harness.config import LabConfig, SuiteSpec
from harness.errors import TreeError
from harness.paths import REPO_ROOT
from harness.qemu import boot as qemu_boot
from harness.qemu.machine import OVERLAY, QMP_SOCKET
from harness.remote import Remote
from harness.results import Outcome, TestResult
from harness.run_request import RunRequest
from harness.suites.dmesg import dmesg_verdict


def do_build(cr: CellRun, lab: LabConfig, req: RunRequest) -> None:
    """The request's build: reused (its manifest, or a bare bzImage) or built now."""
    kernel, config, manifest, bzimage = req.kernel, req.config, req.manifest, req.bzimage
    # Named first, so a kernel that does not build still says which it was.
    cr.rec.environment(kernel=kernel, config=config)
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
            target=req.target,
            kernel_commit=b.commit,
            kernel_describe=b.describe,
            config_hash=b.config_hash,
            manifest=str(b.manifest),
            selftests=", ".join(f"{k}: {v}" for k, v in sorted(b.selftests.items())),
            # dirty, diff hash, mbox: the source identity the history groups runs by.
            **history_record.build_identity(b.manifest),
        )
        record_series(cr, b.manifest)


def record_series(cr: CellRun, manifest: Path) -> None:
    """An mbox kernel's patches (the report's Series section) and the mbox's sha256."""
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return  # a build made by hand or a test's stand-in: no series to tell
    patches = data.get("patches") if isinstance(data, dict) else None
    if isinstance(patches, list) and patches:
        cr.rec.series(p for p in patches if isinstance(p, dict))
        mbox_sha = (data.get("source") or {}).get("mbox_sha256")
        if mbox_sha:
            cr.rec.environment(mbox_sha256=mbox_sha)


def record_findings(cr: CellRun, exc: TreeError) -> None:
    """The kernel under test did not build, or its series did not apply: each finding
    is a fail result, its evidence copied into the cell folder (the cache may move)."""
    for f in exc.findings:
        log = None
        if f.log is not None and f.log.is_file():
            dest = cr.rec.cell_dir / names.folder(f"{f.suite}-{f.name}.log")
            with contextlib.suppress(OSError):
                shutil.copyfile(f.log, dest)
                log = cr.rec.relative(dest)
        reason = f.reason if log is not None or f.log is None else f"{f.reason} (log: {f.log})"
        cr.rec.add(TestResult(f.suite, f.name, Outcome.FAIL, reason, excerpt=f.excerpt, log=log))
    for suite in dict.fromkeys(f.suite for f in exc.findings):
        cr.rec.suite_done(suite, kind=suite)
    if exc.patches:
        cr.rec.series(exc.patches)


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
    cr: CellRun,
    lab: LabConfig,
    stack: contextlib.ExitStack,
    chosen: dict[str, SuiteSpec],
    extra: Sequence[tuple[Path, str]] = (),
) -> None:
    """SSH in and push what the suites need, plus `extra` (local path, name in the
    payload) that is not there already (the expect check's probe)."""
    assert cr.target is not None
    with cr.stage("push") as entry:
        # The target's health (QEMU's run state) is watched while every command runs.
        remote = stack.enter_context(Remote(cr.target.endpoint(), watch=cr.target.health))
        cr.remote = remote
        remote.connect(deadline_s=float(lab.vm.boot_timeout_s))
        items = suites.payload(chosen, cr.build, REPO_ROOT)
        items += [i for i in extra if i[1] not in {name for _, name in items}]
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
