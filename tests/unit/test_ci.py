"""The CI pipelines: the GitLab YAML's structure, the child pipeline generated from a real
lab.yaml matrix, builds handed between jobs, the exit-2 retry, the merge base, and the
shell steps both pipelines run (ci/*.sh)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import ci, cli, config, matrix_grid
from harness.build import load_build
from harness.errors import InfraError, UserError
from harness.paths import REPO_ROOT
from harness.results import Outcome
from tests.unit.test_matrix_ci import cell_run

PARENT = yaml.safe_load((REPO_ROOT / "ci" / "gitlab-ci.yml").read_text())
LAB = config.load(REPO_ROOT / "lab.yaml")


def child_for(name: str = "nightly", label: str | None = "checkout") -> dict[str, Any]:
    kernel = ci.CHECKOUT if label else None
    entries = matrix_grid.cell_list(LAB, name, kernel, label)
    return ci.gitlab_child(entries, name, ci.cache_key(LAB.root), label)


def jobs(pipeline: dict[str, Any]) -> dict[str, dict[str, Any]]:
    reserved = {"variables", "stages", "default", "include", "workflow"}
    return {k: v for k, v in pipeline.items() if k not in reserved and not k.startswith(".")}


def test_parent_plans_then_triggers_the_child_from_its_artifact() -> None:
    assert PARENT["stages"] == ["gmemlab-plan", "gmemlab-matrix"]
    setup = PARENT[".gmemlab"]["before_script"]
    assert setup[-1] == 'source "$GMEMLAB_DIR/ci/setup.sh"'
    assert any("checkout --quiet --detach FETCH_HEAD" in line for line in setup)
    # Jobs sharing a folder take the lab checkout in turns (two fetches fail on git's lock).
    fetch = next(line for line in setup if "fetch --quiet" in line)
    assert fetch.startswith('flock "${TMPDIR:-/tmp}/gmemlab-checkout.lock" sh -ec')
    plan = PARENT[ci.PLAN_JOB]
    assert plan["extends"] == ".gmemlab" and plan["stage"] == "gmemlab-plan"
    assert set(plan["artifacts"]["paths"]) == {"gmemlab-child.yml", "checkout.json"}
    script = "\n".join(plan["script"])
    assert "ci gitlab-child" in script and "> gmemlab-child.yml" in script
    assert "CI_MERGE_REQUEST_DIFF_BASE_SHA" in script  # the merge base is recorded
    trigger = PARENT["gmemlab-matrix"]
    assert trigger["needs"] == [ci.PLAN_JOB] == ["gmemlab-plan"]
    assert trigger["trigger"]["include"] == [{"artifact": "gmemlab-child.yml", "job": ci.PLAN_JOB}]
    assert trigger["trigger"]["strategy"] == "depend"  # the parent shows the child's verdict
    assert trigger["variables"]["PARENT_PIPELINE_ID"] == "$CI_PIPELINE_ID"
    for name, job in jobs(PARENT).items():
        assert job["stage"] in PARENT["stages"], name


def test_child_fans_out_one_build_per_key_and_one_job_per_cell() -> None:
    child = child_for()
    assert child["stages"] == ["build", "test", "report"]
    assert child[".gmemlab"] == PARENT[".gmemlab"]  # set up exactly as the parent
    assert child["variables"]["GMEMLAB_MATRIX"] == "nightly"
    all_jobs = jobs(child)
    builds = {n: j for n, j in all_jobs.items() if n.startswith("build:")}
    cells = {n: j for n, j in all_jobs.items() if n.startswith("cell:")}
    configs = LAB.matrix["nightly"].configs
    assert sorted(builds) == sorted(f"build:checkout-{c}" for c in configs)
    assert sorted(cells) == sorted(f"cell:checkout-{c}-qemu" for c in configs)
    for name, job in all_jobs.items():
        assert job["extends"] == ".gmemlab" and job["stage"] in child["stages"], name
        for line in job["script"]:
            script = line.split("/ci/", 1)[1].rstrip('"')
            assert (REPO_ROOT / "ci" / script).is_file(), line
    for job in builds.values():
        assert job["variables"]["GMEMLAB_KERNEL"] == "$CI_PROJECT_DIR"
        assert job["artifacts"]["paths"] == [f"build/{job['variables']['GMEMLAB_BUILD_KEY']}/"]
    for name, job in cells.items():
        cell = job["variables"]["GMEMLAB_CELL"]
        assert name == f"cell:{cell}"
        build_job = f"build:{job['variables']['GMEMLAB_BUILD_KEY']}"
        assert {"job": build_job, "artifacts": True} in job["needs"]
        assert {"pipeline": "$PARENT_PIPELINE_ID", "job": ci.PLAN_JOB} in job["needs"]
        assert job["artifacts"]["when"] == "always"
        assert job["artifacts"]["reports"]["junit"] == f"results/{cell}/*/junit.xml"
        assert job["variables"]["GMEMLAB_SUITES"] == ",".join(LAB.defaults.suites)
        assert job["variables"]["GMEMLAB_TARGET"] == cell.rsplit("-", 1)[1]
    for name, job in cells.items():
        assert job["script"] == [
            '"$LAB" ci retry --set-aside "results/$GMEMLAB_CELL" -- bash "$GMEMLAB_DIR/ci/cell.sh"'
        ], name
        cell = job["variables"]["GMEMLAB_CELL"]
        assert job["artifacts"]["paths"] == [f"results/{cell}/", f"retried/results/{cell}/"]
    for job in builds.values():
        assert job["script"] == ['"$LAB" ci retry -- bash "$GMEMLAB_DIR/ci/build.sh"']
    for job in [*builds.values(), *cells.values()]:
        # Exit 2 is retried once inside the job (`lab ci retry`); GitLab retries only a
        # lost runner. An exit_codes: [2] here would retry a second time (GitLab retries
        # when *either* when: or exit_codes matches).
        assert job["retry"] == {"max": 1, "when": ["runner_system_failure"]}
        assert job["cache"]["key"] == f"gmemlab-{ci.cache_key(LAB.root)}"
        assert all(p.startswith(".lab-cache/") for p in job["cache"]["paths"])
    report = all_jobs["matrix-report"]
    assert report["when"] == "always" and report["stage"] == "report"
    assert [n["job"] for n in report["needs"][:-1]] == list(cells)
    assert "matrix-report/" in report["artifacts"]["paths"]
    assert report["variables"] == {
        "GMEMLAB_KERNEL": "$CI_PROJECT_DIR",
        "GMEMLAB_KERNEL_LABEL": "checkout",
    }


def test_child_for_lab_yaml_kernels_and_for_a_large_matrix() -> None:
    child = child_for(label=None)
    kernels = {
        j["variables"]["GMEMLAB_KERNEL"] for n, j in jobs(child).items() if n.startswith("build:")
    }
    assert kernels == set(LAB.matrix["nightly"].kernels)
    assert jobs(child)["matrix-report"]["variables"] == {}
    many = [matrix_grid.CellEntry(f"c{i}", "k", "lab", "qemu", "k-lab", ("s",)) for i in range(60)]
    report = ci.gitlab_child(many, "big", "key", None)["matrix-report"]
    assert "needs" not in report  # over GitLab's needs limit: stage order instead


def test_child_variables_are_the_plan_jobs_own(tmp_path: Path) -> None:
    defaults = PARENT["variables"]
    env = {"GMEMLAB_REPO": "https://git.example.org/lab.git", "GMEMLAB_REF": "main",
           "GMEMLAB_DIR": "/builds/x/y/.gmemlab", "GMEMLAB_CCACHE_SIZE": "2G"}  # fmt: skip
    out = ci.child_variables(defaults, env, "f" * 40)
    assert out["GMEMLAB_REPO"] == "https://git.example.org/lab.git"
    assert out["GMEMLAB_REF"] == "f" * 40  # the lab commit the plan used, not a branch
    assert out["GMEMLAB_CCACHE_SIZE"] == "2G"
    assert out["GMEMLAB_DIR"] == "$CI_PROJECT_DIR/.gmemlab"  # each runner's own path
    assert ci.child_variables(defaults, {}, None)["GMEMLAB_REF"] == defaults["GMEMLAB_REF"]
    assert ci.lab_commit(tmp_path) is None
    if (REPO_ROOT / ".git").exists():
        assert ci.lab_commit(REPO_ROOT)


def test_cache_key_follows_lab_yaml_and_fragments(tmp_path: Path) -> None:
    (tmp_path / "kernel-config").mkdir()
    (tmp_path / "lab.yaml").write_text("a")
    (tmp_path / "kernel-config" / "lab.config").write_text("CONFIG_KVM=y\n")
    first = ci.cache_key(tmp_path)
    (tmp_path / "kernel-config" / "lab.config").write_text("CONFIG_KVM=m\n")
    assert ci.cache_key(tmp_path) != first


def test_gitlab_child_command_prints_the_generated_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["ci", "gitlab-child", "nightly", "--checkout"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Generated by `lab ci gitlab-child`")
    assert yaml.safe_load(out) == child_for()


# --- builds as artifacts -------------------------------------------------------------


def fake_build(root: Path) -> Path:
    import hashlib

    files = {
        "obj/arch/x86/boot/bzImage": b"kernel",
        "obj/System.map": b"map",
        "obj/.config": b"CONFIG_KVM=y\n",
        "obj/vmlinux": b"big",
        "selftests/guest_memfd_test": b"\x7fELF test",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)

    def art(rel: str) -> dict[str, object]:
        return {
            "path": rel,
            "size": len(files[rel]),
            "sha256": hashlib.sha256(files[rel]).hexdigest(),
        }

    manifest = {
        "manifest_version": 1,
        "status": "ok",
        "kernel": "k",
        "config_name": "lab",
        "source": {"commit": "c", "describe": "d", "dirty": False},
        "config": {"hash": "h", "verification": {"unknown_to_tree": []}},
        "build_dir": str(root),
        "artifacts": {
            "bzImage": art("obj/arch/x86/boot/bzImage"),
            "vmlinux": art("obj/vmlinux"),
            "System.map": art("obj/System.map"),
            ".config": art("obj/.config"),
        },
        "selftests_dir": str(root / "selftests"),
        "selftests": {"guest_memfd_test": {"status": "built", **art("selftests/guest_memfd_test")}},
        "driver": None,
        "durations_s": {},
        "make_log": str(root / "logs" / "build.log"),
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root / "manifest.json"


def test_a_packed_build_runs_from_wherever_it_arrives(tmp_path: Path) -> None:
    packed = ci.pack_build(fake_build(tmp_path / "cache"), tmp_path / "job1" / "build" / "k-lab")
    assert not (packed.parent / "obj" / "vmlinux").exists()  # not needed to run
    arrived = tmp_path / "job2" / "build"
    arrived.mkdir(parents=True)
    (packed.parent).rename(arrived / "k-lab")
    build = load_build(ci.unpack_build(arrived / "k-lab"))
    assert build.bzimage == (arrived / "k-lab" / "obj/arch/x86/boot/bzImage").resolve()
    assert build.bzimage.read_bytes() == b"kernel"
    assert (build.selftests_dir / "guest_memfd_test").is_file()
    (build.selftests_dir / "guest_memfd_test").write_bytes(b"truncated")
    with pytest.raises(InfraError, match="not the file the build made"):
        ci.unpack_build(arrived / "k-lab")
    with pytest.raises(UserError, match="not a packed build"):
        ci.unpack_build(tmp_path / "cache")
    with pytest.raises(UserError, match="not a build manifest"):
        ci.pack_build(tmp_path / "nope.json", tmp_path / "x")


# --- retry ---------------------------------------------------------------------------


def scripted(codes: list[int]) -> tuple[Any, list[list[str]]]:
    calls: list[list[str]] = []

    def run(argv: Any) -> int:
        calls.append(list(argv))
        return codes.pop(0)

    return run, calls


def test_retry_reruns_exit_2_once_and_sets_the_failed_attempt_aside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    results = tmp_path / "results" / "c"
    (results / "run1").mkdir(parents=True)
    run, calls = scripted([2, 0])
    assert ci.retry(["lab", "run"], set_aside=results, runner=run) == 0
    assert len(calls) == 2
    # Beside results/, not in it: `lab matrix-report results` never counts the failed attempt.
    assert (tmp_path / "retried" / "results" / "c" / "attempt-1" / "run1").is_dir()
    assert not (tmp_path / "results" / "c").exists()
    assert "::warning title=gmemlab::infrastructure error (exit 2)" in capsys.readouterr().out
    for codes, final, n in (([1], 1, 1), ([3], 3, 1), ([2, 2], 2, 2), ([0], 0, 1)):
        run, calls = scripted(list(codes))
        assert ci.retry(["x"], runner=run) == final and len(calls) == n
    assert "::error title=gmemlab::the lab's input is wrong (exit 3)" in capsys.readouterr().out


def test_retry_command_runs_a_real_command(tmp_path: Path) -> None:
    flag = tmp_path / "second"
    script = f"test -e {flag} && exit 0; touch {flag}; exit 2"
    assert cli.main(["ci", "retry", "--", "sh", "-c", script]) == 0
    assert cli.main(["ci", "retry", "--max", "0", "--", "sh", "-c", "exit 2"]) == 2


# --- checkout ------------------------------------------------------------------------


def git(cwd: Path, *args: str) -> str:
    who = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e"}
    env = {**os.environ, **who, "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e"}
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_merge_base_deepens_a_shallow_clone_until_the_histories_meet(tmp_path: Path) -> None:
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    git(upstream, "init", "-q", "-b", "main")
    for i in range(5):
        git(upstream, "commit", "-q", "--allow-empty", "-m", f"base {i}")
    base = git(upstream, "rev-parse", "HEAD")
    git(upstream, "checkout", "-q", "-b", "series")
    for i in range(4):
        git(upstream, "commit", "-q", "--allow-empty", "-m", f"patch {i}")
    git(upstream, "checkout", "-q", "main")
    git(upstream, "commit", "-q", "--allow-empty", "-m", "main moves on")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", "--depth", "1", "--branch", "series", upstream.as_uri(), "clone")
    info = ci.checkout_info(clone, branch="series", target_branch="main")
    assert info["merge_base"] == base
    assert info["commit"] == git(clone, "rev-parse", "HEAD")
    assert ci.checkout_info(clone, base="abc")["merge_base"] == "abc"
    missing = ci.checkout_info(clone, target_branch="no-such-branch")
    assert "merge_base" not in missing and "no-such-branch" in missing["merge_base_error"]
    with pytest.raises(UserError, match="not a git checkout"):
        ci.checkout_info(tmp_path)


# --- the shell steps -----------------------------------------------------------------


def test_report_step_merges_results_and_fails_on_a_missing_cell(tmp_path: Path) -> None:
    cell_run(tmp_path / "results" / "checkout-lab-qemu", "x", [Outcome.PASS])
    env = {**os.environ, "LAB": str(Path(sys.executable).parent / "lab"),
           "GMEMLAB_MATRIX": "nightly", "GMEMLAB_KERNEL": "/builds/g/linux",
           "GMEMLAB_KERNEL_LABEL": "checkout"}  # fmt: skip
    env.pop("GITHUB_STEP_SUMMARY", None)
    done = subprocess.run(["bash", str(REPO_ROOT / "ci" / "report.sh")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 2, done.stderr  # debug and gup-test never ran
    index = json.loads((tmp_path / "matrix-report" / "matrix.json").read_text())
    assert [(r["cell"], r["exit_code"]) for r in index["runs"]] == [
        ("checkout-lab-qemu", 0),
        ("checkout-debug-qemu", 2),
        ("checkout-gup-test-qemu", 2),
    ]
    assert (tmp_path / "matrix-report" / "junit.xml").is_file()


FAKE_LAB = """\
import subprocess, sys
from pathlib import Path
from harness.results import Outcome, Recorder, TestResult
args = sys.argv[1:]
if args[0] == "run":
    assert args[args.index("--target") + 1] == "qemu", args
    results = Path(args[args.index("--results") + 1])
    results.mkdir(parents=True, exist_ok=True)
    rec = Recorder(results, "k-lab-qemu", run_id="run1")
    rec.add(TestResult("s", "t", Outcome.TIMEOUT))
    rec.environment(manifest=args[args.index("--manifest") + 1])
    sys.exit(rec.finish(complete=True).exit_code)
sys.exit(subprocess.run([{lab!r}, *args]).returncode)
"""


def test_cell_step_runs_from_the_packed_build_and_leaves_real_files(tmp_path: Path) -> None:
    work = tmp_path / "work"
    ci.pack_build(fake_build(tmp_path / "cache"), work / "build" / "k-lab")
    fake = tmp_path / "lab"
    real = str(Path(sys.executable).parent / "lab")
    fake.write_text(f"#!{sys.executable}\n" + FAKE_LAB.format(lab=real))
    fake.chmod(0o755)
    (work / "checkout.json").write_text(json.dumps({"branch": "series", "merge_base": "a" * 40}))
    env = {**os.environ, "LAB": str(fake), "GMEMLAB_CELL": "checkout-lab-qemu",
           "GMEMLAB_BUILD_KEY": "k-lab", "GMEMLAB_SUITES": "s",
           "GMEMLAB_ARTIFACT_URL": "https://ci.example.org/jobs/9/artifacts/raw",
           "PYTHONPATH": str(REPO_ROOT)}  # fmt: skip
    env.pop("GITHUB_STEP_SUMMARY", None)
    done = subprocess.run(["bash", str(REPO_ROOT / "ci" / "cell.sh")], cwd=work, env=env,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 2, done.stderr  # the run's own exit code (a timeout)
    results = work / "results" / "checkout-lab-qemu"
    assert not (results / "latest").exists() and not (results / "latest").is_symlink()
    doc = json.loads((results / "run1" / "kcidb.json").read_text())
    assert doc["tests"][0]["status"] == "ERROR"
    assert doc["checkouts"][0]["misc"]["merge_base"] == "a" * 40
    assert doc["tests"][0]["output_files"][0]["url"].startswith(
        "https://ci.example.org/jobs/9/artifacts/raw/results/checkout-lab-qemu/run1/"
    )
