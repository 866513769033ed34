"""`lab export kcidb`: every outcome kind, validated by kcidb-io's own schema."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from kcidb_io import schema

from harness import cli, kcidb
from harness.errors import LabError, UserError
from harness.results import Outcome, Recorder, TestResult

COMMIT = "d2ea4ff1ce50787a98a3900b3fb1636f3620b7cf"


def manifest(tmp_path: Path, **extra: Any) -> Path:
    data = {
        "manifest_version": 1,
        "status": "ok",
        "kernel": "series",
        "config_name": "lab",
        "source": {
            "kind": "git",
            "origin": "https://example.org/linux.git",
            "commit": COMMIT,
            "describe": "v7.3-rc1-46-gd2ea4ff1ce50",
            "dirty": False,
            "diff_sha256": None,
            "base": None,
        },
        "config": {
            "base": "defconfig",
            "fragments": [{"name": "lab.config", "sha256": "0" * 64}],
            "hash": "ab" * 32,
        },
        "selftests": {"guest_memfd_test": {"status": "built"}},
        "compiler": "gcc (Debian 12.2.0-14) 12.2.0",
        "reproduce": {"make": "make O=/b bzImage"},
        **extra,
    }
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(data))
    return path


def every_outcome_run(tmp_path: Path, manifest_path: Path | None) -> Path:
    rec = Recorder(tmp_path / "results", "series-lab-qemu", run_id="run1")
    with rec.stage("build"):
        pass
    env: dict[str, Any] = {"kernel": "series", "config": "lab", "accelerator": "tcg"}
    if manifest_path is not None:
        env["manifest"] = str(manifest_path)
    rec.environment(**env)
    for outcome in Outcome:
        rec.add(
            TestResult(
                "gmem-ioctl",
                f"tests/guest/test_conv.py::TestConv::test_{outcome.value}[4k]",
                outcome,
                reason=f"{outcome.value} reason",
                seconds=1.5,
                excerpt="line\0with a NUL",
                log="series-lab-qemu/gmem-ioctl/pytest.log",
            )
        )
    rec.add(TestResult("kselftests", "x86/private_mem_conversions_test", Outcome.PASS))
    # pytest's second testcase of the same name (an error in teardown).
    rec.add(TestResult("kselftests", "x86/private_mem_conversions_test", Outcome.ERROR))
    rec.finish(complete=True)
    return rec.root


def test_every_outcome_exports_and_validates(tmp_path: Path) -> None:
    run = every_outcome_run(tmp_path, manifest(tmp_path))
    doc = kcidb.export(run, artifact_root="https://ci.example.org/jobs/7/artifacts/run1")
    schema.LATEST.validate(doc)  # kcidb-io's newest schema, not only the one we target
    by_outcome = {
        t["misc"]["outcome"]: t for t in doc["tests"] if t["misc"]["suite"] != "kselftests"
    }
    assert {o: t["status"] for o, t in by_outcome.items()} == {
        "pass": "PASS",
        "fail": "FAIL",
        "skip": "SKIP",
        "error": "ERROR",
        "crash": "FAIL",
        "timeout": "ERROR",
        "missing": "MISS",
    }
    assert "crashed" in by_outcome["crash"]["misc"]["note"]
    crash = by_outcome["crash"]
    assert crash["path"] == "gmemlab.gmem-ioctl.tests.guest.test_conv.TestConv.test_crash_4k"
    assert crash["log_url"] == (
        "https://ci.example.org/jobs/7/artifacts/run1/series-lab-qemu/gmem-ioctl/pytest.log"
    )
    assert crash["output_files"][0]["name"] == "console.log"
    assert crash["log_excerpt"] == "linewith a NUL" and crash["comment"] == "crash reason"
    assert dt.datetime.fromisoformat(crash["start_time"]).tzinfo is not None
    ks = [t for t in doc["tests"] if t["misc"]["suite"] == "kselftests"]
    assert [t["path"] for t in ks] == ["gmemlab.kselftests.x86.private_mem_conversions_test"] * 2
    assert len({t["id"] for t in doc["tests"]}) == len(doc["tests"]) == 9
    (checkout,) = doc["checkouts"]
    assert checkout["git_commit_hash"] == COMMIT
    assert checkout["git_repository_url"] == "https://example.org/linux.git"
    (build,) = doc["builds"]
    assert build["status"] == "PASS" and build["config_name"] == "lab"
    assert build["checkout_id"] == checkout["id"]
    assert build["misc"]["config_hash"] == "ab" * 32
    assert {t["build_id"] for t in doc["tests"]} == {build["id"]}


def test_series_message_ids_from_the_manifest(tmp_path: Path) -> None:
    patches = [
        {
            "index": 1,
            "subject": "KVM: gmem: one",
            "message_id": "<a-1@example.org>",
            "status": "applied",
        },
        {
            "index": 2,
            "subject": "KVM: gmem: two",
            "message_id": "<a-2@example.org>",
            "status": "failed",
        },
    ]
    run = every_outcome_run(tmp_path, manifest(tmp_path, patches=patches))
    (checkout,) = kcidb.export(run)["checkouts"]
    assert checkout["message_id"] == "a-1@example.org"
    assert checkout["valid"] is False  # patch 2 did not apply
    assert [p["message_id"] for p in checkout["misc"]["patches"]] == [
        "<a-1@example.org>",
        "<a-2@example.org>",
    ]
    assert checkout["comment"] == "KVM: gmem: one"
    with_hashes = [{**p, "sha256": f"{i}" * 64} for i, p in enumerate(patches, start=1)]
    run2 = every_outcome_run(
        tmp_path / "b", manifest(tmp_path, source={"commit": COMMIT, "patches": with_hashes})
    )
    (checkout2,) = kcidb.export(run2)["checkouts"]
    assert len(checkout2["patchset_hash"]) == 64


def test_without_manifest_or_root_the_export_still_validates(tmp_path: Path) -> None:
    run = every_outcome_run(tmp_path, None)
    doc = kcidb.export(run)
    assert doc["checkouts"][0]["id"] == "gmemlab:run-run1"
    assert all("log_url" not in t for t in doc["tests"])
    assert doc["tests"][0]["misc"]["log"] == "series-lab-qemu/gmem-ioctl/pytest.log"


def test_a_build_result_that_failed_is_a_failed_build(tmp_path: Path) -> None:
    rec = Recorder(tmp_path, "k-lab-qemu", run_id="r")
    rec.add(TestResult("build", "kernel", Outcome.FAIL, excerpt="gmem.c:1: error: expected ';'"))
    rec.finish(complete=True)
    doc = kcidb.export(rec.root, origin="my_lab")
    (build,) = doc["builds"]
    assert build["status"] == "FAIL" and "expected ';'" in build["log_excerpt"]
    assert doc["tests"] == [] and build["id"].startswith("my_lab:")


def test_bad_input_is_a_user_error(tmp_path: Path) -> None:
    run = every_outcome_run(tmp_path, None)
    with pytest.raises(UserError, match="origins are"):
        kcidb.export(run, origin="Not-Valid")
    with pytest.raises(UserError, match="not an absolute URL"):
        kcidb.export(run, artifact_root="artifacts/run1")
    with pytest.raises(UserError, match=r"no summary\.json"):
        kcidb.export(tmp_path)
    with pytest.raises(LabError, match="not valid at checkouts/0: 'id' is a required"):
        kcidb.validate({"version": {"major": 5, "minor": 3}, "checkouts": [{"origin": "x"}]})


def test_export_command_writes_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = every_outcome_run(tmp_path, manifest(tmp_path))
    info = tmp_path / "checkout.json"
    info.write_text(json.dumps({"branch": "gmem-v9", "merge_base": COMMIT}))
    out = tmp_path / "kcidb.json"
    argv = ["export", "kcidb", str(run), "--checkout-info", str(info), "-o", str(out)]
    assert cli.main(argv) == 0
    doc = json.loads(out.read_text())
    assert doc["checkouts"][0]["git_repository_branch"] == "gmem-v9"
    assert doc["checkouts"][0]["misc"]["merge_base"] == COMMIT
    assert "9 tests, build PASS" in capsys.readouterr().err
    assert cli.main(["export", "kcidb", str(run), "--origin", "UPPER"]) == 3


def test_a_series_that_did_not_apply_is_an_invalid_checkout(tmp_path: Path) -> None:
    """No build manifest (nothing was built): the run's own series record says why."""
    rec = Recorder(tmp_path, "hello-lab-qemu", run_id="r")
    rec.series(
        [
            {"index": 1, "subject": "KVM: a", "message_id": "<a@example.org>", "status": "failed"},
            {"index": 2, "subject": "KVM: b", "message_id": "<b@example.org>",
             "status": "not-tried"},
        ]
    )  # fmt: skip
    rec.add(TestResult("series", "patch 1", Outcome.FAIL, "patch 1/2 'KVM: a' does not apply"))
    rec.finish(complete=True)
    (checkout,) = kcidb.export(rec.root)["checkouts"]
    assert checkout["valid"] is False and checkout["message_id"] == "a@example.org"
    assert [p["status"] for p in checkout["misc"]["patches"]] == ["failed", "not-tried"]
