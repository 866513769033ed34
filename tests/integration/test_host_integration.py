"""A host target for real: a lab host VM (`lab host-vm up`) standing in for bare metal.

The host VM runs the plain mainline lab kernel; the kernel under test is the same tree
with CONFIG_LOCALVERSION="-hosttest" (kernel-config/localversion-hosttest.config), so
the deploy really changes /proc/version and the restore really changes it back.
Inside the host VM the suites create KVM guests (nested under TCG), as in the VM
target.

Scenario tests (`make scenarios`): the host VM boots in ~1.5 min under TCG, each kexec
and each restore reboot take 1-3 min, and the -hosttest kernel is one more build
(cached after the first). Run one test at a time on a busy machine:

    .venv/bin/pytest tests/integration/test_host_integration.py -m scenario -k panics

GMEMLAB_TEST_HOST_VM=NAME reuses a host VM that is already up (`lab host-vm up NAME`)
instead of booting one for the module.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.paths import cache_root
from tests.integration.labcli import lab, lab_yaml, summary, write_lab

pytestmark = [pytest.mark.slow, pytest.mark.scenario]

HOSTTEST = {"base": "defconfig", "fragments": ["lab.config", "localversion-hosttest.config"]}


@pytest.fixture(scope="module")
def host_vm() -> Iterator[str]:
    reuse = os.environ.get("GMEMLAB_TEST_HOST_VM")
    if reuse:
        yield reuse
        return
    name = f"itest-{os.getpid()}"
    done = lab("host-vm", "up", name, "--kernel", "mainline", "--config", "lab")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "kexec: yes" in done.stderr and "kvm: yes" in done.stderr, done.stderr[-2000:]
    try:
        yield name
    finally:
        lab("host-vm", "down", name, timeout=120)


def lab_file(tmp: Path, hosts: dict[str, dict[str, Any]], **extra: Any) -> Path:
    """lab.yaml with the -hosttest config set, a cheap suite, hosts and extra sections."""
    data = lab_yaml()
    data["configs"]["hosttest"] = HOSTTEST
    data["suites"]["uname"] = {"kind": "command", "argv": ["uname", "-r"]}
    data["hosts"] = hosts
    data.update(extra)
    return write_lab(tmp, data)


def host_entry(name: str, **settings: Any) -> dict[str, Any]:
    console = cache_root() / "hosts" / name / "console.log"
    return {"ssh": name, "console": ["tail", "-n", "0", "-F", str(console)], **settings}


@pytest.fixture(scope="module")
def hosttest_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = lab_file(tmp_path_factory.mktemp("lab"), {})
    done = lab("--lab", str(path), "build", "--kernel", "mainline", "--config", "hosttest")
    assert done.returncode == 0, done.stderr[-3000:]
    return Path(done.stdout.strip().splitlines()[-1])


def running_kernel(name: str) -> str:
    config = cache_root() / "hosts" / "ssh_config"
    done = subprocess.run(
        ["ssh", "-F", str(config), "-o", "BatchMode=yes", name, "cat", "/proc/version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_cell_on_the_host_vm_runs_the_test_kernel_and_restores_the_host(
    host_vm: str, hosttest_manifest: Path, short_tmp: Path
) -> None:
    before = running_kernel(host_vm)
    assert "-hosttest" not in before
    path = lab_file(short_tmp, {host_vm: host_entry(host_vm)})
    results = short_tmp / "results"
    done = lab(
        "--lab", str(path), "run", "--manifest", str(hosttest_manifest), "--target", host_vm,
        "--suites", "uname,gmem-ioctl,kselftests", "--results", str(results),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    s = summary(results)
    env = s["environment"]
    assert s["complete"] and s["cell"] == f"mainline-hosttest-{host_vm}"
    assert env["host_kernel"] == before
    assert env["deployed_kernel"].startswith("Linux version 7.3.4-hosttest (")
    assert "build id" in env["deploy"] and "match" in env["deploy"]
    assert env["guest_kernel"] == "7.3.4-hosttest"
    assert env["host_restore"].startswith("restored: rebooted into its default kernel")
    assert env["host_kernel_after"] == before
    outcomes = {(r["suite"], r["name"]): r["outcome"] for r in s["results"]}
    assert outcomes[("uname", "uname -r")] == "pass"
    assert any(o == "pass" for (suite, _), o in outcomes.items() if suite == "gmem-ioctl")
    assert outcomes[("kselftests", "guest_memfd_test")] == "pass"
    report = (results / "latest" / "report.md").read_text()
    assert "7.3.4-hosttest" in report and "host_kernel_after" in report
    # The host is really back on its own kernel, and free for the next run.
    assert running_kernel(host_vm) == before
    assert "[restore] restored" in done.stderr


def test_a_kernel_that_panics_at_boot_is_a_crash_and_the_host_comes_back(
    host_vm: str, hosttest_manifest: Path, short_tmp: Path
) -> None:
    before = running_kernel(host_vm)
    # The same host, but its test kernels cannot start init: "Kernel panic - not
    # syncing: Requested init /nonexistent failed", then panic=30 reboots the VM into
    # its stock kernel.
    broken = host_entry(host_vm, cmdline_extra=["init=/nonexistent"], boot_timeout_s=400)
    path = lab_file(short_tmp, {"broken": broken})
    results = short_tmp / "results"
    done = lab(
        "--lab", str(path), "run", "--manifest", str(hosttest_manifest), "--target", "broken",
        "--suites", "uname", "--results", str(results),
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-4000:]
    s = summary(results)
    first = s["results"][0]
    assert (first["suite"], first["outcome"]) == ("boot", "crash"), first
    assert "came back" in first["reason"]
    assert "Kernel panic" in first["excerpt"], first["excerpt"][-2000:]
    assert [(r["suite"], r["outcome"]) for r in s["results"][1:]] == [("uname", "missing")]
    assert s["environment"]["host_restore"].startswith("restored")
    assert running_kernel(host_vm) == before


def test_matrix_runs_the_vm_and_the_host_vm(
    host_vm: str, hosttest_manifest: Path, short_tmp: Path
) -> None:
    matrix = {"hosts": {"kernels": ["mainline"], "configs": ["hosttest"],
                        "targets": ["qemu", host_vm], "suites": ["uname"]}}  # fmt: skip
    path = lab_file(short_tmp, {host_vm: host_entry(host_vm)}, matrix=matrix)
    results = short_tmp / "results"
    done = lab("--lab", str(path), "matrix", "hosts", "--results", str(results))
    assert done.returncode == 0, done.stderr[-4000:]
    (folder,) = results.glob("matrix-hosts-*")
    index = json.loads((folder / "matrix.json").read_text())
    got = [(r["cell"], r["exit_code"]) for r in index["runs"]]
    assert got == [("mainline-hosttest-qemu", 0), (f"mainline-hosttest-{host_vm}", 0)]
    for cell in ("mainline-hosttest-qemu", f"mainline-hosttest-{host_vm}"):
        s = json.loads((folder / cell / "summary.json").read_text())
        assert [r["outcome"] for r in s["results"]] == ["pass"], cell
        assert s["environment"]["guest_kernel"] == "7.3.4-hosttest"


def test_a_tdx_cell_on_the_host_vm_skips_with_the_probes_reason(
    host_vm: str, short_tmp: Path
) -> None:
    path = lab_file(short_tmp, {host_vm: host_entry(host_vm)})
    results = short_tmp / "results"
    done = lab(
        "--lab", str(path), "run", "--kernel", "mainline", "--config", "tdx", "--target",
        host_vm, "--suites", "uname,gmem-ioctl", "--results", str(results),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    s = summary(results)
    assert [r["outcome"] for r in s["results"]] == ["skip", "skip"]
    reason = f"host {host_vm} lacks TDX: not an Intel CPU (vendor AuthenticAMD)"
    assert all(r["reason"] == reason for r in s["results"]), s["results"]
    assert "build" not in s["stages"] and "deploy" not in s["stages"]
    assert s["environment"]["host_probe"]["capabilities"]["tdx"][0] is False
