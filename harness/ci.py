"""What CI pipelines need beyond `lab build`, `lab run` and `lab matrix-report`.

- A build as a job artifact: `pack_build` copies what `lab run --manifest` uses (bzImage,
  System.map, .config, the selftests) into a folder of the job's workspace with a
  manifest pointing there; `unpack_build` re-points it wherever the next job (another
  runner, another path) finds it, and checks the files against the manifest's sha256.
- The GitLab child pipeline of a matrix: `gitlab_child` turns `lab matrix NAME --list`
  into one build job per build key, one job per cell needing its build, and a report
  job (GitLab's parallel:matrix is static, so the fan-out is generated).
- `retry`: run a command, once more if it exits 2 (infrastructure). Both CIs' build and
  cell jobs run their step under it (GitLab's own `retry:` is left to runner failures),
  so the rule is one code path, and the failed attempt's results stay as evidence.
- `checkout_info`: the tree's commit and its merge base with the target branch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from harness.digest import sha256_file
from harness.errors import InfraError, UserError
from harness.matrix_grid import CellEntry, builds_of
from harness.paths import REPO_ROOT
from harness.results import EXIT_INFRA

# The files `lab run --manifest` reads (vmlinux is left out: large, and not used to run).
PACKED_ARTIFACTS = ("bzImage", "System.map", ".config")
GITLAB_TEMPLATE = REPO_ROOT / "ci" / "gitlab-ci.yml"
# The kernel under review, as GitLab job scripts name it.
CHECKOUT = "$CI_PROJECT_DIR"
# What CI keeps of $LAB_CACHE between pipelines (builds and sources are per pipeline).
CACHED = ("ccache", "images", "keys", "git")
# GitLab refuses more than 50 entries in one job's needs:.
GITLAB_MAX_NEEDS = 50
# The parent pipeline's plan job (ci/gitlab-ci.yml). No ':' in the name: gitlab-ci-local
# looks for a trigger's artifact include under the raw job name but stores artifacts under
# an escaped one, so a child included from `gmemlab:plan` is never found there.
PLAN_JOB = "gmemlab-plan"
# Exit 2 is retried inside the job (`lab ci retry`, as on GitHub); GitLab's own retry is
# kept for a runner that died, which a retry on the same runner cannot help. No
# exit_codes here: GitLab retries when *either* matches, so [2] would retry a second time.
GITLAB_RETRY = {"max": 1, "when": ["runner_system_failure"]}


# --- builds as artifacts -------------------------------------------------------------


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(
            f"{path}: not a build manifest ({exc})", "pass what `lab build` printed"
        ) from None
    if not isinstance(data, dict) or "bzImage" not in data.get("artifacts", {}):
        raise UserError(f"{path}: not a build manifest", "pass what `lab build` printed")
    return data


def _relocate(data: dict[str, Any], folder: Path) -> None:
    data["build_dir"] = str(folder)
    data["selftests_dir"] = str(folder / "selftests")


def pack_build(manifest: Path, dest: Path) -> Path:
    """Copy a finished build's run inputs into dest; returns dest/manifest.json."""
    data = _read_manifest(manifest)
    root = Path(data["build_dir"])
    dest = dest.resolve()
    dest.mkdir(parents=True, exist_ok=True)
    for name in PACKED_ARTIFACTS:
        rel = data["artifacts"][name]["path"]
        source = root / rel
        if not source.is_file():
            raise UserError(f"{source}: missing ({name} of {manifest})", "rebuild: `lab build`")
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest / rel)
    selftests = Path(data["selftests_dir"])
    if selftests.is_dir():
        shutil.copytree(selftests, dest / "selftests", symlinks=True, dirs_exist_ok=True)
    data["packed_from"] = data["build_dir"]
    data["packed"] = list(PACKED_ARTIFACTS)
    _relocate(data, dest)
    out = dest / "manifest.json"
    out.write_text(json.dumps(data, indent=2) + "\n")
    return out


def unpack_build(folder: Path) -> Path:
    """Point a packed build's manifest at the folder it is in now, after checking its
    files; returns the manifest's path (for `lab run --manifest`)."""
    folder = folder.resolve()
    path = folder / "manifest.json"
    data = _read_manifest(path)
    if "packed" not in data:
        raise UserError(f"{path} is not a packed build", "make it with `lab ci pack-build`")
    expected = [
        (data["artifacts"][n]["path"], data["artifacts"][n]["sha256"]) for n in data["packed"]
    ]
    for name, entry in (data.get("selftests") or {}).items():
        if entry.get("status") == "built":
            expected.append((f"selftests/{name}", entry["sha256"]))
    for rel, sha in expected:
        file = folder / rel
        if not file.is_file() or sha256_file(file) != sha:
            raise InfraError(
                f"{file}: missing or not the file the build made (sha256 differs)",
                "re-run the build job; its artifact did not arrive whole",
            )
    _relocate(data, folder)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


# --- GitLab child pipeline -----------------------------------------------------------


def cache_key(lab_root: Path) -> str:
    """A hash of lab.yaml and the config fragments: the CI cache (ccache, images, git
    mirrors) is kept per such key, so a changed config starts a new cache."""
    digest = hashlib.sha256()
    files = [lab_root / "lab.yaml", *sorted((lab_root / "kernel-config").glob("*"))]
    for file in files:
        if file.is_file():
            digest.update(f"{file.relative_to(lab_root)}\0".encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def gitlab_template(path: Path = GITLAB_TEMPLATE) -> dict[str, Any]:
    """The `.gmemlab` job template and variables of ci/gitlab-ci.yml: the child's jobs
    set up the lab exactly as the parent's do."""
    data = yaml.safe_load(path.read_text())
    return {"variables": data.get("variables", {}), ".gmemlab": data[".gmemlab"]}


def child_variables(
    defaults: dict[str, Any], environ: dict[str, str], lab_commit: str | None
) -> dict[str, Any]:
    """The child's variables: what the plan job ran with (the includer's GMEMLAB_REPO,
    a matrix chosen for this pipeline), not the template's defaults; values that name
    other variables ($CI_PROJECT_DIR/...) stay references, as each job's runner has its
    own paths. GMEMLAB_REF becomes the lab commit the plan job used, so every job of
    the child runs the same lab even if the ref is a branch that moves meanwhile."""
    out: dict[str, Any] = {}
    for name, default in defaults.items():
        refers = isinstance(default, str) and "$" in default
        out[name] = default if refers or name not in environ else environ[name]
    if lab_commit:
        out["GMEMLAB_REF"] = lab_commit
    return out


def lab_commit(root: Path = REPO_ROOT) -> str | None:
    """The lab checkout's commit, if it is a git checkout."""
    done = _git(root, "rev-parse", "HEAD")
    return done.stdout.strip() if done.returncode == 0 else None


def _job_name(kind: str, name: str) -> str:
    return f"{kind}:{name}"


def gitlab_child(
    entries: list[CellEntry],
    matrix: str,
    key: str,
    checkout_label: str | None = None,
    template: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The child pipeline: build jobs (one per build key), cell jobs needing their build,
    a report job. With checkout_label, the kernel is the pipeline's own checkout
    ($CI_PROJECT_DIR, wherever each job's runner puts it), and the cells carry that label."""
    tpl = template if template is not None else gitlab_template()
    variables = child_variables(tpl["variables"], dict(os.environ), lab_commit())
    child: dict[str, Any] = {
        "variables": {**variables, "GMEMLAB_MATRIX": matrix},
        "stages": ["build", "test", "report"],
        ".gmemlab": tpl[".gmemlab"],
    }
    cache = {
        "key": f"gmemlab-{key}",
        "paths": [
            ".lab-cache/ccache/",
            ".lab-cache/images/",
            ".lab-cache/keys/",
            ".lab-cache/git/",
        ],
        "when": "always",
    }
    for build in builds_of(entries):
        kernel = CHECKOUT if checkout_label else build["kernel"]
        child[_job_name("build", build["build_key"])] = {
            "extends": ".gmemlab",
            "stage": "build",
            "variables": {
                "GMEMLAB_KERNEL": kernel,
                "GMEMLAB_CONFIG": build["config"],
                "GMEMLAB_BUILD_KEY": build["build_key"],
            },
            "script": ['"$LAB" ci retry -- bash "$GMEMLAB_DIR/ci/build.sh"'],
            "cache": {**cache, "policy": "pull-push"},
            "retry": GITLAB_RETRY,
            "artifacts": {
                "when": "on_success",
                "expire_in": "3 days",
                "paths": [f"build/{build['build_key']}/"],
            },
        }
    cells: list[str] = []
    for e in entries:
        name = _job_name("cell", e.cell)
        cells.append(name)
        child[name] = {
            "extends": ".gmemlab",
            "stage": "test",
            "needs": [
                {"job": _job_name("build", e.build_key), "artifacts": True},
                {"pipeline": "$PARENT_PIPELINE_ID", "job": PLAN_JOB},
            ],
            "variables": {
                "GMEMLAB_CELL": e.cell,
                "GMEMLAB_BUILD_KEY": e.build_key,
                "GMEMLAB_SUITES": ",".join(e.suites),
                "GMEMLAB_TARGET": e.target,
            },
            "script": [
                '"$LAB" ci retry --set-aside "results/$GMEMLAB_CELL" -- '
                'bash "$GMEMLAB_DIR/ci/cell.sh"'
            ],
            "cache": {**cache, "policy": "pull-push"},
            "retry": GITLAB_RETRY,
            "artifacts": {
                "when": "always",
                "expire_in": "30 days",
                # retried/: a failed attempt set aside by `lab ci retry` (evidence).
                "paths": [f"results/{e.cell}/", f"retried/results/{e.cell}/"],
                "reports": {"junit": f"results/{e.cell}/*/junit.xml"},
            },
        }
    report: dict[str, Any] = {
        "extends": ".gmemlab",
        "stage": "report",
        "when": "always",
        "variables": (
            {"GMEMLAB_KERNEL": CHECKOUT, "GMEMLAB_KERNEL_LABEL": checkout_label}
            if checkout_label
            else {}
        ),
        "script": ['bash "$GMEMLAB_DIR/ci/report.sh"'],
        "artifacts": {
            "when": "always",
            "expire_in": "30 days",
            "paths": ["matrix-report/", "results/"],
        },
    }
    if len(cells) + 1 <= GITLAB_MAX_NEEDS:
        needs: list[dict[str, Any]] = [{"job": c, "artifacts": True} for c in cells]
        report["needs"] = [*needs, {"pipeline": "$PARENT_PIPELINE_ID", "job": PLAN_JOB}]
    child["matrix-report"] = report
    return child


def dump_yaml(data: dict[str, Any]) -> str:
    header = "# Generated by `lab ci gitlab-child` from lab.yaml's matrix; not edited by hand.\n"
    return header + yaml.safe_dump(data, sort_keys=False, width=100)


# --- retry ---------------------------------------------------------------------------


def _say(text: str) -> None:
    print(f"lab ci: {text}", file=sys.stderr, flush=True)


def _annotate(level: str, text: str) -> None:
    if os.environ.get("GITHUB_ACTIONS") == "true":
        print(f"::{level} title=gmemlab::{text}", flush=True)


def retry(
    cmd: Sequence[str],
    max_retries: int = 1,
    set_aside: Path | None = None,
    runner: Callable[[Sequence[str]], int] | None = None,
) -> int:
    """Run cmd; on exit 2 (infrastructure) run it again, up to max_retries times. The
    failed attempt's results (set_aside, e.g. results/<cell>) move to
    retried/results/<cell>/attempt-N beside the results folder: out of what `lab
    matrix-report results` merges, so the merged report counts the final attempt only,
    and the failed one stays as evidence. Each attempt's exit code is said on stderr."""
    if not cmd:
        raise UserError("no command to run", "lab ci retry -- CMD ARGS...")
    run = runner or (lambda argv: subprocess.run(list(argv), check=False).returncode)
    attempt = 0
    while True:
        attempt += 1
        code = run(cmd)
        _say(f"attempt {attempt} exited {code}")
        if code != EXIT_INFRA or attempt > max_retries:
            break
        _say(f"attempt {attempt} ended in an infrastructure error (exit 2): retrying")
        _annotate("warning", f"infrastructure error (exit 2) on attempt {attempt}; retried")
        if set_aside is not None and set_aside.exists():
            top = set_aside.parent
            keep = top.parent / "retried" / top.name / set_aside.name / f"attempt-{attempt}"
            keep.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(set_aside), str(keep))
    if code == 1:
        _annotate("error", "a test failed or the kernel crashed (exit 1): see the report")
    elif code == EXIT_INFRA:
        _annotate("error", f"infrastructure error (exit 2) after {attempt} attempts")
    elif code == 3:
        _annotate("error", "the lab's input is wrong (exit 3): the job log says what to fix")
    return code


# --- checkout --------------------------------------------------------------------------


def _git(tree: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    return subprocess.run(
        ["git", "-C", str(tree), *args], capture_output=True, text=True, check=False, env=env
    )


def merge_base(tree: Path, target: str, deepen: int = 200, tries: int = 8) -> str | None:
    """The merge base of HEAD with origin/<target>; a shallow CI clone is deepened a
    bounded number of times until the two histories meet."""
    ref = f"refs/remotes/origin/{target}"
    for attempt in range(tries + 1):
        found = _git(tree, "merge-base", "HEAD", ref)
        if found.returncode == 0:
            return found.stdout.strip()
        if attempt == tries:
            break
        spec = f"+refs/heads/{target}:{ref}"
        fetched = _git(tree, "fetch", "--quiet", "--no-tags", f"--deepen={deepen}", "origin", spec)
        if fetched.returncode != 0:
            fetched = _git(
                tree, "fetch", "--quiet", "--no-tags", f"--depth={deepen}", "origin", spec
            )
        if fetched.returncode != 0:
            return None
    return None


def checkout_info(
    tree: Path,
    repository_url: str = "",
    branch: str = "",
    target_branch: str = "",
    base: str = "",
) -> dict[str, Any]:
    head = _git(tree, "rev-parse", "HEAD")
    if head.returncode != 0:
        raise UserError(f"{tree}: not a git checkout ({head.stderr.strip()})", "pass the tree")
    info: dict[str, Any] = {"commit": head.stdout.strip()}
    describe = _git(tree, "describe", "--always", "--tags", "--dirty")
    if describe.returncode == 0:
        info["describe"] = describe.stdout.strip()
    if repository_url:
        info["repository_url"] = repository_url
    if branch:
        info["branch"] = branch
    if target_branch:
        info["target_branch"] = target_branch
    found = base or (merge_base(tree, target_branch) if target_branch else None)
    if found:
        info["merge_base"] = found
    elif target_branch:
        info["merge_base_error"] = f"no common history with origin/{target_branch} found"
    return info
