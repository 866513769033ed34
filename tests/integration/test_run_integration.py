"""`lab run` for real: kernel build (cached), QEMU boot, SSH, suites in the VM.

Slow: the first run builds mainline 7.3 (~13 min cold on 2 cores) and the image; later
runs reuse both through --manifest. Each test writes into its own results folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from kcidb_io import schema as kcidb_schema

from harness.paths import REPO_ROOT
from tests.integration.labcli import LAB, lab, lab_yaml, summary, write_lab

pytestmark = pytest.mark.slow


def lab_file(tmp_path: Path, suites: dict[str, dict[str, object]]) -> Path:
    """lab.yaml plus test-only suites, in tmp_path."""
    data = lab_yaml()
    data["suites"].update(suites)
    return write_lab(tmp_path, data)


def run_args(lab_yaml: Path, manifest: Path, suites: str, results: Path) -> list[str]:
    """`lab run` of suites on manifest's kernel, lab_yaml as lab.yaml, into results."""
    return [
        "--lab", str(lab_yaml), "run", "--manifest", str(manifest), "--suites", suites,
        "--results", str(results),
    ]  # fmt: skip


def test_full_run_on_mainline(short_tmp: Path) -> None:
    tmp_path = short_tmp
    results = tmp_path / "results"
    done = lab("run", "--kernel", "mainline", "--results", str(results))
    s = summary(results)
    assert done.returncode in (0, 1), done.stderr[-3000:]
    assert s["complete"], s["incomplete_reason"]
    by_suite: dict[str, list[dict]] = {}  # type: ignore[type-arg]
    for r in s["results"]:
        by_suite.setdefault(r["suite"], []).append(r)
    # Real results from inside the VM, not just skips.
    assert any(r["outcome"] == "pass" for r in by_suite["gmem-ioctl"])
    names = {r["name"].split("::")[0]: r["outcome"] for r in by_suite["kselftests"]}
    assert names["guest_memfd_conversions_test"] == "skip"  # series-only
    # Mainline's own tests pass on the lab kernel (lab.config carries what they assert,
    # e.g. CONFIG_TRANSPARENT_HUGEPAGE for guest_memfd_test's collapse check).
    for test in ("guest_memfd_test", "x86/private_mem_conversions_test"):
        assert names[test] == "pass", names
    assert s["environment"]["accelerator"] and s["harness_overhead_s"] is not None
    assert (results / "latest" / "report.html").is_file()
    assert "verdict:" in done.stderr
    # The real run as KCIDB JSON (issue 12): `lab export kcidb` validates before it
    # writes; kcidb-io validates the file again here, on its own.
    kcidb_json, root = tmp_path / "kcidb.json", "https://ci.example.org/artifacts/run"
    exported = lab("export", "kcidb", str((results / "latest").resolve()),
                   "--artifact-root", root, "-o", str(kcidb_json))  # fmt: skip
    assert exported.returncode == 0, exported.stderr[-3000:]
    document = json.loads(kcidb_json.read_text())
    kcidb_schema.V5_3.validate(document)
    tests = document["tests"]
    assert len(tests) == len([r for r in s["results"] if r["suite"] != "build"]) > 0
    assert {t["status"] for t in tests} >= {"PASS", "SKIP"}, {t["status"] for t in tests}
    assert all(t["output_files"][0]["url"].startswith(f"{root}/") for t in tests)
    assert document["builds"][0]["status"] == "PASS", document["builds"]


def test_injected_failure_exits_1(short_tmp: Path, manifest: Path) -> None:
    tmp_path = short_tmp
    path = lab_file(tmp_path, {"inject": {"kind": "command", "argv": ["false"]}})
    results = tmp_path / "results"
    done = lab(*run_args(path, manifest, "inject", results))
    assert done.returncode == 1, done.stderr[-3000:]
    report = (results / "latest" / "report.md").read_text()
    assert "### FAIL inject / false" in report


def test_killed_vm_exits_2_and_keeps_earlier_results(short_tmp: Path, manifest: Path) -> None:
    tmp_path = short_tmp
    path = lab_file(
        tmp_path,
        {
            "first": {"kind": "command", "argv": ["true"]},
            "sleepy": {"kind": "command", "argv": ["sleep", "600"], "timeout_s": 900},
        },
    )
    results = tmp_path / "results"
    proc = subprocess.Popen(
        [*LAB, *run_args(path, manifest, "first,sleepy", results)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            try:
                s = summary(results)
            except (FileNotFoundError, json.JSONDecodeError):
                s = {}
            if s.get("stages", {}).get("suite:sleepy", {}).get("status") == "running":
                break
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            time.sleep(1)
        time.sleep(3)  # let `sleep 600` start in the guest
        machine = json.loads((results / "latest" / s["cell"] / "machine.json").read_text())
        os.kill(machine["qemu_pid"], signal.SIGKILL)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, out[-3000:]
    s = summary(results)
    assert not s["complete"]
    got = [(r["suite"], r["outcome"]) for r in s["results"]]
    assert got == [("first", "pass"), ("sleepy", "error")]
    assert "Incomplete run" in (results / "latest" / "report.md").read_text()
