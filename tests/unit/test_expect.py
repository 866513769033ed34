"""Expected features: the probe's names, and the check that fails a cell without them."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import cast

import pytest

from harness import expect, features
from harness.cellrun import CellRun
from harness.progress import Progress
from harness.remote import Remote
from harness.results import Outcome, Recorder
from tests.unit import guestmods
from tests.unit.fakes import FakeMachine, FakeRemote, Reply

probe = guestmods.load("kvm.probe")


def mainline_probe() -> str:
    """What tests/guest/probe.py prints on mainline 7.3: no KVM_SET_MEMORY_ATTRIBUTES2."""
    feats = probe.Features(
        kernel="7.3.4-gmemlab",
        kvm=True,
        guest_memfd=True,
        vm_types=[0, 1],
        attrs2_gmem=False,
        attrs2_gmem_errno="ENOTTY",
        attrs2_vm=False,
        attrs2_vm_errno="ENOTTY",
    )
    return str(feats.to_json())


def test_the_feature_table_is_the_probes_boolean_entries() -> None:
    data = json.loads(probe.Features().to_json())
    booleans = {k for k, v in data.items() if isinstance(v, bool)}
    assert set(features.FEATURES) == booleans
    for related in features.FEATURES.values():
        assert set(related) <= set(data), related


def test_names_are_checked() -> None:
    assert features.check_name("attrs2_gmem") == "attrs2_gmem"
    with pytest.raises(ValueError, match="attrs2_gmem, attrs2_vm"):
        features.check_name("attrs_2")


def cell(tmp_path: Path, script: FakeRemote) -> CellRun:
    rec = Recorder(tmp_path / "results", "mainline-lab-qemu")
    cr = CellRun(rec, Progress(io.StringIO()))
    cr.remote = cast(Remote, script)
    cr.target = FakeMachine(rec.cell_dir)
    return cr


def test_an_absent_expected_feature_fails_with_the_probes_evidence(tmp_path: Path) -> None:
    remote = FakeRemote(lambda argv: Reply(0, mainline_probe()))
    cr = cell(tmp_path, remote)
    expect.check(cr, ["attrs2_gmem", "sw_protected"])
    assert remote.calls == [["python3", "tests/guest/probe.py", "--no-vcpu"]]
    by_name = {r.name: r for r in cr.rec.record.results}
    absent = by_name["attrs2_gmem"]
    assert absent.suite == "expect" and absent.outcome is Outcome.FAIL
    assert absent.reason.startswith("expected feature attrs2_gmem absent: ")
    assert "attrs2_gmem_errno=ENOTTY" in absent.reason
    assert "gmem_in_place_conversion_param=None" in absent.reason
    assert "kernel 7.3.4-gmemlab" in absent.reason
    assert by_name["sw_protected"].outcome is Outcome.PASS
    assert json.loads((cr.rec.cell_dir / "probe.json").read_text())["attrs2_gmem"] is False
    assert cr.rec.record.suites["expect"]["outcome"] == "fail"
    assert cr.rec.record.exit_code == 1


def test_expected_vcpus_run_the_vcpu_probe(tmp_path: Path) -> None:
    remote = FakeRemote(lambda argv: Reply(0, mainline_probe()))
    expect.check(cell(tmp_path, remote), ["vcpus_run"])
    assert remote.calls == [["python3", "tests/guest/probe.py"]]


def test_a_probe_that_prints_no_json_is_an_error(tmp_path: Path) -> None:
    remote = FakeRemote(lambda argv: Reply(1, "Traceback ...\nImportError: kvm"))
    cr = cell(tmp_path, remote)
    expect.check(cr, ["attrs2_gmem"])
    (r,) = cr.rec.record.results
    assert r.outcome is Outcome.ERROR and "no feature JSON (exit 1)" in r.reason
    assert "ImportError" in r.excerpt


def test_nothing_expected_runs_nothing(tmp_path: Path) -> None:
    remote = FakeRemote(lambda argv: Reply(0, mainline_probe()))
    cr = cell(tmp_path, remote)
    expect.check(cr, [])
    assert remote.calls == [] and cr.rec.record.results == []
    assert expect.payload(Path("/repo"), []) == []
    assert expect.payload(Path("/repo"), ["kvm"]) == [(Path("/repo/tests/guest"), "tests/guest")]
