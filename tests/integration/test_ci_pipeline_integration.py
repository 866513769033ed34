"""The GitLab pipeline for real: ci/gitlab-ci.yml under gitlab-ci-local (issue 12).

gitlab-ci-local (npm; `make scenarios` installs it under .venv/node) runs the pipeline
with its shell executor in a git repository of the offline 7.3 tree with one patch
commit on top (a pr_info in kvm_gmem_init), as a kernel repository that includes the
lab's pipeline would. The lab's matrix `ci-test` (this test's lab.yaml) has one config
on two targets, so its two cells share one build:
  - qemu: its first boot fails as a QEMU that cannot start would (a test-only QEMU
    wrapper as vm.qemu): `lab run` exits 2, `lab ci retry` runs it once more, and the
    cell passes. Its one suite finds the patch's line in the guest's dmesg: the kernel
    under test is the checkout's.
  - ghost: a bare-metal host that never answers SSH (a name under .invalid, which never
    resolves): exit 2 on both attempts, and no third.
The report job runs anyway (when: always) and merges both cells into matrix-report/
with one verdict (2, the worst) and one junit.xml.

What gitlab-ci-local does not do, and how the test stands in for it:
  - include: project/remote cannot be fetched here: the kernel repository's
    .gitlab-ci.yml is the lab's ci/gitlab-ci.yml with the variables an includer sets
    (the lab's URL and ref, the matrix, LAB_CACHE on this machine's cache, as a
    self-hosted runner that keeps its cache would).
  - retry: is read by no code of gitlab-ci-local (4.73, and 4.75 the same): the pipeline
    retries exit 2 inside the job with `lab ci retry`, which is what is proven here.
  - It runs every job in the repository's own folder (no clone per job), so artifacts
    are handed over in place, as on one shell runner.
  - Its trigger job passes whatever the child did (no `strategy: depend`): it exits 0,
    and the verdict is read from the jobs and matrix-report/ instead.
The kernel repository is a twin (tests/integration/twin_trees.py): its objects come from
the shared ccache. Its commits and .gmemlab (the lab checkout with its venv) are kept
between runs. Never a cold build: skipped without a cached mainline build.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import arch
from harness.paths import REPO_ROOT, cache_root
from tests.integration import twin_trees

pytestmark = [pytest.mark.slow, pytest.mark.scenario]

GCL_ENV = "GMEMLAB_GITLAB_CI_LOCAL"
GCL = REPO_ROOT / ".venv" / "node" / "node_modules" / ".bin" / "gitlab-ci-local"
LABEL = "ci-pipeline"
MATRIX = "ci-test"
QEMU_CELL, GHOST_CELL = "checkout-lab-qemu", "checkout-lab-ghost"
BUILD_KEY = "checkout-lab"
MARK = "gmemlab CI pipeline test: patched guest_memfd"
INJECTED = "injected by the CI pipeline test"
BRANCH = "gmem-ci-test"
PIPELINE_TIMEOUT_S = 5400
# What earlier runs left in the repository. Kept: the lab checkout .gmemlab (its venv),
# and gitlab-ci-local's copy of every tracked file (.gitlab-ci-local/builds, 2.2 GB: it
# makes one at every pipeline's start, for container jobs, even with none; kept, that
# copy is an rsync of what changed instead of minutes of I/O).
LEFTOVERS = ("results", "retried", "matrix-report", "build", "checkout.json",
             "gmemlab-child.yml", ".gitlab-ci.yml")  # fmt: skip
GCL_STATE = ".gitlab-ci-local"


def gitlab_ci_local() -> Path:
    found = Path(os.environ.get(GCL_ENV) or GCL)
    if not found.is_file() or shutil.which("node") is None:
        pytest.skip(
            f"gitlab-ci-local is not installed ({found}): `make scenarios` installs it with "
            f"npm under .venv/node (Node.js and npm needed), or set {GCL_ENV}"
        )
    done = subprocess.run([str(found), "--version"], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"{found} does not start here: {(done.stdout + done.stderr)[-300:]}")
    return found


def git(repo: Path, *args: str) -> str:
    """git in repo, as one fixed author at a fixed date (the same commits every time)."""
    who = {f"GIT_{r}_{k}": v for r in ("AUTHOR", "COMMITTER")
           for k, v in (("NAME", "gmemlab ci test"), ("EMAIL", "ci-test@gmemlab"),
                        ("DATE", "2026-01-01T00:00:00Z"))}  # fmt: skip
    done = subprocess.run(["git", "-C", str(repo), *args], env={**os.environ, **who},
                          capture_output=True, text=True, check=True)  # fmt: skip
    return done.stdout.strip()


def kernel_repo() -> tuple[Path, str, str]:
    """The twin as a git repository: the 7.3 tree on main, the patch on BRANCH (made
    once); returns it and the two commits. origin is the repository itself, so the
    pipeline finds origin/main for the merge base as in a CI clone."""
    tree = twin_trees.make_twin(LABEL)
    if not (tree / ".git" / "refs" / "heads" / BRANCH).is_file():
        shutil.rmtree(tree / ".git", ignore_errors=True)
        git(tree, "init", "-q", "-b", "main")
        git(tree, "add", "-A", "-f", ".")
        git(tree, "commit", "-q", "-m", "Linux 7.3.4 (Debian linux-source-7.3)")
        git(tree, "checkout", "-q", "-b", BRANCH)
        gmem = tree / twin_trees.GMEM_C
        text = gmem.read_text()
        end = "\t\treturn ret;\n\t}\n\treturn 0;\n}\n\nvoid kvm_gmem_exit(void)"
        assert text.count(end) == 1, f"{gmem}: kvm_gmem_init's end is not there"
        hello = end.replace("\treturn 0;", f'\tpr_info("{MARK}\\n");\n\treturn 0;')
        gmem.write_text(text.replace(end, hello))
        git(tree, "commit", "-q", "-a", "-m", "KVM: guest_memfd: say hello at init (CI test)")
        git(tree, "remote", "add", "origin", str(tree))
        git(tree, "fetch", "-q", "origin")
        git(tree, "remote", "set-head", "origin", "main")
    git(tree, "checkout", "-q", "-f", BRANCH)
    state = tree / GCL_STATE
    gone = [tree / name for name in LEFTOVERS]
    gone += [p for p in state.iterdir() if p.name != "builds"] if state.is_dir() else []
    for path in gone:
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    exclude = tree / ".git" / "info" / "exclude"
    lines = exclude.read_text().splitlines() if exclude.exists() else []
    for pattern in ("/.gitlab-ci.yml", "/.gitlab-ci-local/", "/.gmemlab/"):
        if pattern not in lines:
            lines.append(pattern)
    exclude.write_text("\n".join(lines) + "\n")
    return tree, git(tree, "rev-parse", "main"), git(tree, "rev-parse", "HEAD")


def qemu_wrapper() -> tuple[Path, Path]:
    """vm.qemu for the test: the first boot fails, everything else is QEMU. At a fixed
    path with fixed content, so the lab's KVM probe (cached per binary) is asked once;
    not under ~/.cache: vm.qemu's path parts may not start with a dot."""
    folder = Path(tempfile.gettempdir()) / "gmemlab-ci-pipeline-test"
    folder.mkdir(exist_ok=True)
    wrapper, flag = folder / "qemu-first-boot-fails", folder / "first-boot-failed"
    real = shutil.which(arch.HOST.qemu)
    assert real, f"{arch.HOST.qemu} is not installed"
    text = f"""#!/bin/sh
# Test-only QEMU (tests/integration/test_ci_pipeline_integration.py): the first boot
# exits 1 before the guest runs, as a QEMU that cannot start does; all else is QEMU.
case " $* " in *" --version "*|*gmemlab-kvm-probe*) exec {real} "$@" ;; esac
if mkdir {flag} 2>/dev/null; then
    echo "{arch.HOST.qemu}: {INJECTED}: cannot start (first boot only)" >&2
    exit 1
fi
exec {real} "$@"
"""
    if not wrapper.is_file() or wrapper.read_text() != text:
        wrapper.write_text(text)
        wrapper.chmod(0o755)
    shutil.rmtree(flag, ignore_errors=True)
    return wrapper, flag


def lab_repo(tmp: Path, wrapper: Path) -> Path:
    """The lab as the pipeline fetches it: this checkout's files (uncommitted edits too)
    with a lab.yaml that adds the test's suite, host, QEMU and matrix, on branch ci-test."""
    repo = tmp / "lab"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(REPO_ROOT), str(repo)], check=True)
    tracked = subprocess.run(["git", "-C", str(REPO_ROOT), "ls-files", "-z"],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    for rel in filter(None, tracked.split("\0")):
        src = REPO_ROOT / rel
        if src.is_file() and not src.is_symlink():
            shutil.copy2(src, repo / rel)
    data = yaml.safe_load((REPO_ROOT / "lab.yaml").read_text())
    data["vm"]["qemu"] = str(wrapper)
    # .invalid never resolves (RFC 6761): no packet is sent to any host.
    data["hosts"] = {"ghost": {"ssh": "gmemlab-ci-ghost.invalid"}}
    data["suites"]["patched-kernel"] = {
        "kind": "command", "argv": ["sh", "-c", f"dmesg | grep -F '{MARK}'"], "timeout_s": 120
    }  # fmt: skip
    data["matrix"] = {
        MATRIX: {"kernels": ["mainline"], "configs": ["lab"], "targets": ["qemu", "ghost"],
                 "suites": ["patched-kernel"]}
    }  # fmt: skip
    (repo / "lab.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    git(repo, "checkout", "-q", "-b", MATRIX)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", "lab under test, with the CI test's lab.yaml")
    return repo


def lab_checkout(tree: Path, repo: Path) -> None:
    """.gmemlab at the commit the pipeline will fetch (its checkout is then a no-op), kept
    between runs for its venv. `make deps` is this machine's already (`make scenarios`
    depends on it): its stamp is made newer than ci/deps.sh."""
    lab = tree / ".gmemlab"
    if not (lab / ".git").is_dir():
        shutil.rmtree(lab, ignore_errors=True)
        subprocess.run(["git", "clone", "-q", "--no-checkout", str(repo), str(lab)], check=True)
    git(lab, "remote", "set-url", "origin", str(repo))
    git(lab, "fetch", "-q", "--depth", "1", "origin", MATRIX)
    git(lab, "checkout", "-q", "--detach", "-f", "FETCH_HEAD")
    (lab / ".deps-installed").touch()


def pipeline_file(tree: Path, repo: Path) -> None:
    """The includer's .gitlab-ci.yml: the lab's pipeline with the variables it sets."""
    data = yaml.safe_load((REPO_ROOT / "ci" / "gitlab-ci.yml").read_text())
    data["variables"].update({
        "GMEMLAB_REPO": f"file://{repo}", "GMEMLAB_REF": MATRIX, "GMEMLAB_MATRIX": MATRIX,
        "LAB_CACHE": str(cache_root().resolve()), "GMEMLAB_CCACHE_SIZE": "10G",
    })  # fmt: skip
    (tree / ".gitlab-ci.yml").write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture
def tmp() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="gci-", dir="/tmp"))
    yield path
    twin_trees.clean_up(path)


def statuses(output: str) -> dict[str, str]:
    """Job name -> PASS/FAIL from gitlab-ci-local's closing reports, a line per job
    (`PASS  name`, the child's passed jobs as `PASS  [gmemlab-matrix] -> name`)."""
    found = {}
    for line in output.splitlines():
        m = re.fullmatch(r"\s*(PASS|FAIL)\s+(?:\[[^\]]*\] -> )?(\S+)\s*", line)
        if m:
            found[m[2]] = m[1]
    return found


def job_log(tree: Path, job: str) -> str:
    """A job's output as gitlab-ci-local keeps it: under the job's name with every run of
    characters other than letters, digits, '_' and '-' in base64url."""
    safe = re.sub(
        r"[^\w-]+", lambda m: base64.urlsafe_b64encode(m[0].encode()).decode().rstrip("="), job
    )
    return (tree / GCL_STATE / "output" / f"{safe}.log").read_text(errors="replace")


def mentions(folder: Path, text: str) -> bool:
    return any(text in f.read_text(errors="replace") for f in folder.rglob("*.log"))


def one_run(folder: Path) -> dict[str, Any]:
    runs = [p for p in folder.iterdir() if (p / "summary.json").is_file()]
    assert len(runs) == 1, (folder, runs)
    data: dict[str, Any] = json.loads((runs[0] / "summary.json").read_text())
    data["_dir"] = str(runs[0])
    return data


def test_gitlab_pipeline_fans_out_shares_the_build_retries_and_reports(tmp: Path) -> None:
    gcl = gitlab_ci_local()
    try:
        build = json.loads(twin_trees.mainline_manifest().read_text())
    except RuntimeError as exc:
        pytest.skip(str(exc))
    tree, base, patch = kernel_repo()
    # The pipeline's build must land in the twin's build folder (or it is a cold build).
    cfg = twin_trees.config_hash(str(tree))
    assert cfg == build["config"]["hash"], "the tree's .config differs from mainline's"
    twin_trees.link_build_dir(tree, cfg, kernel=str(tree))
    wrapper, flag = qemu_wrapper()
    repo = lab_repo(tmp, wrapper)
    lab_checkout(tree, repo)
    pipeline_file(tree, repo)
    env = {k: v for k, v in os.environ.items() if k != "LAB_CACHE"}  # the pipeline says
    start = time.monotonic()
    done = subprocess.run([str(gcl)], cwd=tree, env=env, capture_output=True, text=True,
                          timeout=PIPELINE_TIMEOUT_S)  # fmt: skip
    wall = time.monotonic() - start
    out = done.stdout + done.stderr
    (tmp / "gitlab-ci-local.log").write_text(out)
    jobs = statuses(done.stdout)
    print(f"\ngitlab-ci-local: exit {done.returncode} after {wall:.0f} s; jobs: {jobs}")
    ctx = f"{out[-6000:]}\n(full output: {tmp / 'gitlab-ci-local.log'})"

    # Fan-out, one build for both cells, and the report after a failed cell.
    assert jobs == {
        "gmemlab-plan": "PASS", "gmemlab-matrix": "PASS", f"build:{BUILD_KEY}": "PASS",
        f"cell:{QEMU_CELL}": "PASS", f"cell:{GHOST_CELL}": "FAIL", "matrix-report": "FAIL",
    }, ctx  # fmt: skip
    # gitlab-ci-local's trigger job passes whatever its child did (no `strategy: depend`),
    # so it exits 0; on GitLab the parent shows the child's verdict.
    assert done.returncode == 0, ctx
    child = yaml.safe_load((tree / "gmemlab-child.yml").read_text())
    assert [j for j in child if j.startswith("build:")] == [f"build:{BUILD_KEY}"]
    packed = json.loads((tree / "build" / BUILD_KEY / "manifest.json").read_text())
    assert packed["source"]["commit"] == patch and not packed["source"]["dirty"], packed["source"]

    # The qemu cell: exit 2 on its first attempt (kept under retried/), passed on its second.
    qemu_log = job_log(tree, f"cell:{QEMU_CELL}")
    assert "lab ci: attempt 1 exited 2" in qemu_log and "attempt 2 exited 0" in qemu_log, qemu_log
    first = one_run(tree / "retried" / "results" / QEMU_CELL / "attempt-1")
    assert first["exit_code"] == 2 and first["stages"]["boot"]["status"] == "failed", first
    assert mentions(Path(first["_dir"]), INJECTED)  # QEMU's own output, kept in the run
    qemu = one_run(tree / "results" / QEMU_CELL)
    assert qemu["exit_code"] == 0 and qemu["suites"]["patched-kernel"]["outcome"] == "pass"
    kcidb = json.loads((Path(qemu["_dir"]) / "kcidb.json").read_text())
    assert kcidb["checkouts"][0]["git_commit_hash"] == patch, kcidb["checkouts"]
    # The ghost cell: exit 2 twice, never a third attempt.
    ghost_log = job_log(tree, f"cell:{GHOST_CELL}")
    assert "attempt 1 exited 2" in ghost_log and "attempt 2 exited 2" in ghost_log, ghost_log
    assert "attempt 3" not in ghost_log
    assert one_run(tree / "results" / GHOST_CELL)["exit_code"] == 2
    assert (tree / "retried" / "results" / GHOST_CELL / "attempt-1").is_dir()
    # Both cells had the one build the build job handed over (the patched commit): the
    # qemu cell booted it; the ghost cell never got that far (its host stage comes
    # first), but its KCIDB JSON is made from that build's manifest.
    env = qemu["environment"]
    assert env["manifest"] == str(tree / "build" / BUILD_KEY / "manifest.json"), env
    assert env["kernel_commit"] == patch, env
    ghost_kcidb = json.loads(
        Path(one_run(tree / "results" / GHOST_CELL)["_dir"], "kcidb.json").read_text()
    )
    assert ghost_kcidb["checkouts"][0]["git_commit_hash"] == patch

    # The merged report: both cells, the final attempts only, one verdict, one junit.xml.
    merged = json.loads((tree / "matrix-report" / "matrix.json").read_text())
    runs = {r["cell"]: r["exit_code"] for r in merged["runs"]}
    assert runs == {QEMU_CELL: 0, GHOST_CELL: 2} and len(merged["runs"]) == 2, merged
    assert merged["exit_code"] == 2, merged
    junit = (tree / "matrix-report" / "junit.xml").read_text()
    assert "patched-kernel" in junit and "<testsuite" in junit
    checkout = json.loads((tree / "checkout.json").read_text())
    assert checkout["commit"] == patch and checkout["merge_base"] == base, checkout
    assert flag.is_dir()  # the injected failure happened
    print(f"merged verdict: {merged['exit_code']}; wall time {wall:.0f} s")
