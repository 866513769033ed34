"""The run: build -> image -> boot -> push -> suites -> collect -> report.

Each stage is timed into summary.json. Results are recorded as they arrive, and the
collect/report steps run in a `finally`, so whatever stops the run (a kernel crash,
Ctrl-C, SIGTERM, a killed VM) leaves the console log, the results so far and a report
on disk, with the run marked incomplete (tuxmake's habit of always saving metadata).
"""

from __future__ import annotations

import contextlib
import shlex
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from harness import crash, junit, report, suites
from harness.config import LabConfig, SuiteSpec
from harness.errors import InfraError, LabError, UserError
from harness.paths import REPO_ROOT
from harness.qemu.machine import OVERLAY, QMP_SOCKET, ssh_endpoint
from harness.qemu.version import version_line
from harness.remote import Remote
from harness.results import EXIT_USER, Outcome, Recorder, TestResult
from harness.suites.dmesg import dmesg_verdict, new_dmesg_lines


class Interrupted(Exception):
    """SIGTERM (CI cancelling the job): handled like Ctrl-C."""


@dataclass(frozen=True)
class RunRequest:
    kernel: str
    config: str
    suites: tuple[str, ...]
    results_root: Path = REPO_ROOT / "results"
    # Reuse a finished build instead of building (its manifest names the selftests).
    manifest: Path | None = None
    bzimage: Path | None = None
    run_id: str | None = None

    @property
    def cell(self) -> str:
        return f"{self.kernel}-{self.config}-qemu"

    def reproducer(self, manifest: Path | None) -> list[str]:
        argv = [
            str(REPO_ROOT / ".venv" / "bin" / "lab"),
            "run",
            "--kernel",
            self.kernel,
            "--config",
            self.config,
            "--suites",
            ",".join(self.suites),
        ]
        if manifest is not None:
            argv += ["--manifest", str(manifest)]
        if self.bzimage is not None:
            argv += ["--bzimage", str(self.bzimage)]
        return argv


@dataclass
class Progress:
    """Stage lines on the terminal; the details are in the run folder."""

    stream: TextIO = field(default_factory=lambda: sys.stderr)

    def say(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def result(self, r: TestResult) -> None:
        # Passes and skips are in the report; the terminal shows what needs a look.
        if r.outcome in (Outcome.PASS, Outcome.SKIP):
            return
        reason = f": {r.reason}" if r.reason else ""
        self.say(f"    {r.outcome.value:8} {r.name}{reason}"[:160])


# --- the run ---------------------------------------------------------------------------


class Run:
    def __init__(self, lab: LabConfig, req: RunRequest, progress: Progress) -> None:
        self.lab, self.req, self.p = lab, req, progress
        self.rec = Recorder(req.results_root, req.cell, run_id=req.run_id)
        self.rec.listener = progress.result
        self.build: Any = None
        self.machine: Any = None
        self.remote: Remote | None = None
        self.lost_reason = ""

    # The stages ------------------------------------------------------------------------

    @contextlib.contextmanager
    def stage(self, name: str, detail: str = "") -> Iterator[dict[str, Any]]:
        self.p.say(f"[{name}] {detail}".rstrip())
        with self.rec.stage(name) as entry:
            yield entry
        self.p.say(f"[{name}] ok in {entry['seconds']:.1f}s {entry.get('note', '')}".rstrip())

    def do_build(self) -> None:
        from harness import build

        if self.req.manifest is not None:
            with self.stage("build", f"reusing {self.req.manifest}") as entry:
                self.build = build.load_build(self.req.manifest)
                entry["note"] = f"({self.build.describe})"
        elif self.req.bzimage is not None:
            with self.stage("build", f"reusing {self.req.bzimage} (no manifest: no selftests)"):
                self.build = None
        else:
            with self.stage("build", f"{self.req.kernel}/{self.req.config}") as entry:
                request = build.prepare_request(self.lab, self.req.kernel, self.req.config)
                self.build = build.build_kernel(request)
                entry["note"] = f"({self.build.describe})"
            self.rec.account("make", self.build.make_seconds)
        b = self.build
        if b is not None:
            self.rec.environment(
                kernel=self.req.kernel,
                config=self.req.config,
                kernel_commit=b.commit,
                kernel_describe=b.describe,
                config_hash=b.config_hash,
                manifest=str(b.manifest),
                selftests=", ".join(f"{k}: {v}" for k, v in sorted(b.selftests.items())),
            )
        else:
            self.rec.environment(kernel=self.req.kernel, config=self.req.config)

    def bzimage(self) -> Path:
        if self.req.bzimage is not None:
            return self.req.bzimage
        return Path(self.build.bzimage)

    def do_boot(self, stack: contextlib.ExitStack) -> None:
        from harness import image
        from harness.qemu.boot import boot

        with self.stage("image") as entry:
            img = image.ensure_image(self.lab)
            entry["note"] = f"({img.recipe_hash[:12]})"
        self.rec.account("image-build", float(getattr(img, "build_seconds", 0.0)))
        self.img = img
        cell = self.rec.cell_dir
        with self.stage("boot") as entry:
            self.machine = stack.enter_context(
                boot(self.lab, self.bzimage(), img, cell, tether=True)
            )
            m = self.machine
            entry["note"] = f"({m.accel}, nested={m.nested}, boot {m.boot_seconds:.1f}s)"
        m = self.machine
        self.rec.account("boot", float(m.boot_seconds))
        (cell / "qemu-cmdline.txt").write_text(shlex.join(str(a) for a in m.qemu_argv) + "\n")
        self.rec.environment(
            qemu_version=version_line(self.lab.vm.qemu),
            accelerator=m.accel,
            cpu_model=m.cpu_model,
            nested=f"{m.nested} ({getattr(m, 'nested_info', None) and m.nested_info.detail})",
            boot_seconds=round(float(m.boot_seconds), 2),
            image=str(img.base_qcow2),
        )

    def do_connect(self, stack: contextlib.ExitStack, chosen: dict[str, SuiteSpec]) -> None:
        m = self.machine
        endpoint = ssh_endpoint(m)
        with self.stage("push") as entry:
            self.remote = stack.enter_context(Remote(endpoint))
            self.remote.connect(deadline_s=float(self.lab.vm.boot_timeout_s))
            items = suites.payload(chosen, self.build, REPO_ROOT)
            sent = self.remote.push(items, suites.PAYLOAD)
            entry["note"] = f"({len(items)} items, {sent / 1e6:.1f} MB in one tar stream)"
            uname = self.remote.run(["uname", "-r"], timeout_s=30)
            self.rec.environment(guest_kernel=uname.stdout.strip())
        self.check_boot_dmesg()

    def check_boot_dmesg(self) -> None:
        """A WARN or BUG while booting is a kernel problem too: its own result."""
        text = self.dmesg()
        if text is None:
            return
        (self.rec.cell_dir / "dmesg-boot.txt").write_text(text)
        verdict = dmesg_verdict(text.splitlines())
        if verdict is not None:
            self.rec.add(
                TestResult(
                    "boot",
                    verdict.name,
                    verdict.outcome,
                    verdict.reason.replace("during the suite", "while booting"),
                    excerpt=verdict.excerpt,
                    log=self.rec.relative(self.rec.cell_dir / "dmesg-boot.txt"),
                )
            )
            self.rec.suite_done("boot", kind="boot")

    def dmesg(self) -> str | None:
        assert self.remote is not None
        ran = self.remote.run(["dmesg"], timeout_s=60)
        return ran.stdout if ran.exit_code == 0 and not ran.lost else None

    def on_lost(self) -> tuple[Outcome, str, str]:
        """SSH died: let QEMU finish dying, then ask the console what happened."""
        m = self.machine
        with contextlib.suppress(Exception):
            if m.alive():
                m.wait_exit(10)
        found = _as_list(m.crash())
        if found:
            self.lost_reason = f"kernel crash: {found[0].describe()}"
            return Outcome.CRASH, self.lost_reason, crash.report(found, limit=60)
        state = "QEMU is still running" if m.alive() else "QEMU exited"
        self.lost_reason = f"the VM went away without a crash on the console ({state})"
        return Outcome.ERROR, self.lost_reason, _console_tail(m.console_log)

    def do_suites(self, chosen: dict[str, SuiteSpec]) -> bool:
        """Run every chosen suite; False when the VM was lost part-way."""
        assert self.remote is not None
        names = list(chosen)
        for i, name in enumerate(names):
            spec = chosen[name]
            sdir = self.rec.suite_dir(name)
            with self.stage(f"suite:{name}", f"({spec.kind})") as entry:
                before = self.dmesg()
                if before is not None:
                    (sdir / "dmesg-before.txt").write_text(before)
                ctx = suites.Context(self.remote, self.rec, self.build, REPO_ROOT, self.on_lost)
                if before is None:
                    run = suites.SuiteRun(name, lost=True)
                    outcome, why, excerpt = self.on_lost()
                    self.rec.add(TestResult(name, "(suite)", outcome, why, excerpt=excerpt))
                else:
                    run = suites.run_suite(name, spec, ctx)
                self.rec.account("tests", run.exec_seconds)
                after = None if run.lost else self.dmesg()
                if after is not None:
                    (sdir / "dmesg-after.txt").write_text(after)
                    (self.rec.cell_dir / "dmesg.txt").write_text(after)
                    assert before is not None
                    fresh = new_dmesg_lines(before, after)
                    if fresh:
                        (sdir / "dmesg-new.txt").write_text("\n".join(fresh) + "\n")
                    verdict = dmesg_verdict(fresh)
                    if verdict is not None:
                        self.rec.add(
                            TestResult(
                                name,
                                verdict.name,
                                verdict.outcome,
                                verdict.reason,
                                excerpt=verdict.excerpt,
                                log=self.rec.relative(sdir / "dmesg-new.txt"),
                            )
                        )
                elif not run.lost:
                    # The suite finished but the VM no longer answers: say so here,
                    # or the reason for everything missing afterwards would be silent.
                    run.lost = True
                    outcome, why, excerpt = self.on_lost()
                    self.rec.add(
                        TestResult(
                            name,
                            "dmesg",
                            outcome,
                            f"no dmesg after the suite: {why}",
                            excerpt=excerpt,
                        )
                    )
                self.rec.suite_done(
                    name, kind=spec.kind, seconds=round(run.seconds, 2), note=run.note
                )
                entry["note"] = _counts_note(self.rec, name)
            if run.lost:
                for rest in names[i + 1 :]:
                    self.rec.add(
                        TestResult(
                            rest,
                            "(suite)",
                            Outcome.MISSING,
                            "not run: the VM was lost in an earlier suite",
                        )
                    )
                    self.rec.suite_done(rest, kind=chosen[rest].kind, seconds=0.0)
                return False
        return True

    def collect(self) -> None:
        """Copy what the VM left behind into the cell folder; never raises."""
        cell = self.rec.cell_dir
        m = self.machine
        with contextlib.suppress(Exception):
            if m is not None:
                console = Path(m.console_log)
                target = cell / "console.log"
                if console.exists() and console.resolve() != target.resolve():
                    target.write_bytes(console.read_bytes())
        # The throwaway disk overlay and QMP socket are not results.
        for junk in (OVERLAY, QMP_SOCKET):
            with contextlib.suppress(OSError):
                if m is None or not m.alive():
                    (cell / junk).unlink(missing_ok=True)
        manifest = getattr(self.build, "manifest", None) or self.req.manifest
        (cell / "reproduce.sh").write_text(
            "#!/bin/sh\n# Re-run this cell (same kernel build, same suites).\n"
            f"cd {shlex.quote(str(REPO_ROOT))} && exec "
            f"{shlex.join(self.req.reproducer(manifest))}\n"
        )
        (cell / "reproduce.sh").chmod(0o755)


def _as_list(found: Any) -> list[crash.Crash]:
    if not found:
        return []
    if isinstance(found, crash.Crash):
        return [found]
    return [c for c in found if isinstance(c, crash.Crash)]


def _console_tail(path: Any, lines: int = 30) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except (OSError, TypeError):
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _counts_note(rec: Recorder, suite: str) -> str:
    counts = rec.record.suites.get(suite, {}).get("counts", {})
    return "(" + ", ".join(f"{k} {v}" for k, v in counts.items() if v) + ")"


def choose_suites(lab: LabConfig, names: tuple[str, ...]) -> dict[str, SuiteSpec]:
    unknown = [n for n in names if n not in lab.suites]
    if unknown:
        raise UserError(
            f"unknown suite(s): {', '.join(unknown)} (known: {', '.join(sorted(lab.suites))})",
            "pass --suites with names from suites: in lab.yaml",
        )
    return {n: lab.suites[n] for n in names}


def run(lab: LabConfig, req: RunRequest, progress: Progress | None = None) -> int:
    """The whole run; returns the exit code (DESIGN.md)."""
    p = progress or Progress()
    if req.kernel not in lab.kernels and req.manifest is None and req.bzimage is None:
        raise UserError(
            f"unknown kernel {req.kernel!r} (known: {', '.join(sorted(lab.kernels))})",
            "pass --kernel with a name from kernels: in lab.yaml",
        )
    chosen = choose_suites(lab, req.suites)
    r = Run(lab, req, p)
    p.say(f"[run] {r.rec.run_id}: {req.cell}, suites {', '.join(chosen)} -> {r.rec.root}")
    complete, reason, user_error = False, "", False
    start = time.monotonic()
    try:
        with contextlib.ExitStack() as stack:
            r.do_build()
            r.do_boot(stack)
            r.do_connect(stack, chosen)
            complete = r.do_suites(chosen)
            if not complete:
                reason = r.lost_reason or "the VM was lost during a suite"
            with r.stage("shutdown"):
                stack.close()
    except (KeyboardInterrupt, Interrupted):
        reason = "interrupted (Ctrl-C or SIGTERM)"
        p.say(f"[run] {reason}: stopping the VM and writing what was collected")
    except LabError as exc:
        reason = exc.what.splitlines()[0]
        user_error = isinstance(exc, UserError)
        r.rec.error(exc.message)
        p.say(f"[run] {'user error' if user_error else 'infrastructure error'}: {exc.message}")
    except Exception as exc:  # a harness bug: still leave the evidence behind
        reason = f"harness error: {type(exc).__name__}: {exc}"
        r.rec.error(reason)
        p.say(f"[run] {reason}")
    finally:
        r.collect()
        record = r.rec.finish(complete, reason)
        junit.write(record.results, r.rec.root / "junit.xml", req.cell)
        html, md = report.render(record, r.rec.root)
    code = EXIT_USER if user_error else record.exit_code
    p.say(
        f"\nverdict: {record.verdict} (exit {code}) in {time.monotonic() - start:.0f}s; "
        + ", ".join(f"{k} {v}" for k, v in record.counts.items() if v)
    )
    p.say(f"harness overhead: {record.harness_overhead_s:.1f}s")
    p.say(f"report: {html}\n        {md}")
    return code


__all__ = ["InfraError", "Interrupted", "RunRequest", "run"]
