"""The patch in hand, for real (issue 9): a tree anywhere, a series from mail onto
mainline, a series that does not apply, a tree that does not compile, expected
features. Slow: each test boots a VM (10-30 s) or builds a kernel with warm ccache
(1-3 min on 2 cores; the first series on mainline also commits the 7.3 tree into a
base repository once, a few minutes). Run one at a time:

    .venv/bin/pytest tests/integration/test_patch_integration.py::NAME -m slow -v

The series are made with git format-patch against the offline 7.3 tree's own files
(a scratch repository holding just the files they touch: the blobs, and so the
patches' index lines, are the tree's).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.paths import REPO_ROOT, cache_root
from tests.integration.labcli import lab, lab_yaml, summary, write_lab
from tests.unit.fake_series import commit_series

pytestmark = [pytest.mark.slow, pytest.mark.scenario]

GMEM = "virt/kvm/guest_memfd.c"
MAKEFILE = "tools/testing/selftests/kvm/Makefile.kvm"
HELLO = "tools/testing/selftests/kvm/gmemlab_hello_test.c"
PRINTK = "gmemlab: guest_memfd initialised (series test patch)"
INIT_END = "\t\treturn ret;\n\t}\n\treturn 0;\n}\n\nvoid kvm_gmem_exit(void)"
HELLO_C = """\
// SPDX-License-Identifier: GPL-2.0
/* A trivial selftest added by a series: the lab must build and run it. */
#include "kselftest.h"

int main(void)
{
\tksft_print_header();
\tksft_set_plan(1);
\tksft_test_result_pass("gmemlab hello\\n");
\tksft_finished();
}
"""


def mainline_tree() -> Path:
    trees = sorted((cache_root() / "sources" / "deb" / "trees").glob("linux-source-7.3_*/*"))
    trees = [t for t in trees if (t / "Makefile").is_file()]
    if not trees:
        pytest.skip("no unpacked 7.3 tree in the cache (run `lab build --kernel mainline`)")
    return trees[-1]


def format_patch(base: Path, edits: list[tuple[str, dict[str, str]]], out: Path) -> Path:
    """git format-patch of edits (one commit each) against base's own files."""
    work = out.with_suffix(".repo")
    work.mkdir(parents=True)
    touched = {rel for _, files in edits for rel in files}
    for rel in sorted(touched):
        if (base / rel).is_file():
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(base / rel, work / rel)
    out.write_text(commit_series(work, edits, prefix="PATCH v1", base="7.3 base files"))
    return out


def hello_series(tree: Path, out: Path) -> Path:
    gmem = (tree / GMEM).read_text()
    assert INIT_END in gmem, "kvm_gmem_init's ending changed in this tree"
    printk = gmem.replace(
        INIT_END, INIT_END.replace("\treturn 0;", f'\tpr_info("{PRINTK}\\n");\n\treturn 0;')
    )
    makefile = (
        (tree / MAKEFILE)
        .read_text()
        .replace(
            "TEST_GEN_PROGS_x86 += guest_memfd_test\n",
            "TEST_GEN_PROGS_x86 += guest_memfd_test\nTEST_GEN_PROGS_x86 += gmemlab_hello_test\n",
            1,
        )
    )
    edits = [
        ("KVM: guest_memfd: say so when initialised", {GMEM: printk}),
        ("KVM: selftests: add gmemlab_hello_test", {HELLO: HELLO_C, MAKEFILE: makefile}),
    ]
    return format_patch(tree, edits, out)


def unappliable(mbox_text: str) -> str:
    """Patch 1 edited so it cannot apply: a context line that is not in the tree and a
    preimage blob git does not have (so git am -3 cannot fall back to a 3-way merge)."""
    text = mbox_text.replace(" \t\treturn ret;", " \t\treturn rc;", 1)
    return re.sub(r"^index [0-9a-f]+\.\.", "index 1234567..", text, count=1, flags=re.M)


def lab_file(tmp: Path, kernels: dict[str, Any], selftests: list[str] | None = None) -> Path:
    """lab.yaml plus kernels and a `hello` command suite, in tmp."""
    data = lab_yaml()
    data["kernels"].update(kernels)
    data["suites"]["hello"] = {"kind": "command", "argv": ["true"]}
    if selftests:
        data["suites"]["kselftests"]["tests"] += selftests
    return write_lab(tmp, data)


def run_failing_series(
    tmp: Path, kernel: str, box: Path
) -> tuple[subprocess.CompletedProcess[str], Path, dict[str, Any]]:
    """`lab run` of the `hello` suite on box's series onto mainline (lab.yaml kernel
    `kernel`), which must fail the cell (exit 1, FAIL): the run, its results folder and
    summary."""
    path = lab_file(tmp, {kernel: {"mbox": {"file": str(box), "base": "mainline"}}})
    results = tmp / "results"
    done = lab(
        "--lab", str(path), "run", "--kernel", kernel, "--suites", "hello",
        "--results", str(results),
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]
    s = summary(results)
    assert (s["exit_code"], s["verdict"]) == (1, "FAIL")
    return done, results, s


def report(results: Path) -> str:
    return (results / "latest" / "report.md").read_text()


def checkout_status() -> set[str]:
    """`git status` of the checkout, ignored and untracked files included, a line each."""
    done = subprocess.run(
        ["git", "status", "--porcelain", "--ignored", "--untracked-files=all"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return set(done.stdout.splitlines())


# --- (a) any tree, anywhere --------------------------------------------------------------


def test_make_lab_test_on_a_tree_at_a_hostile_path(short_tmp: Path) -> None:
    """`make lab-test KERNEL=<a path with '..', spaces and a comma>` builds, boots and runs
    every suite; results land under results/, nothing beside the tree."""
    tree = mainline_tree()
    outer = short_tmp / "my tree, v1"
    outer.mkdir()
    (outer / "linux").symlink_to(tree)  # the cached tree: ccache has all of it
    kernel = f"{outer}/../my tree, v1/linux"
    before_outer = sorted(os.listdir(outer))
    before_repo = checkout_status()
    done = subprocess.run(
        ["make", "-o", ".deps-installed", "lab-test", f"KERNEL={kernel}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=5400,
    )
    results = REPO_ROOT / "results"
    s = summary(results)
    assert s["complete"], (s["incomplete_reason"], done.stderr[-3000:])
    assert s["exit_code"] in (0, 1), done.stderr[-3000:]
    assert s["environment"]["kernel"] == kernel
    cell = s["cell"]
    assert cell.startswith("linux-source-7.3-") and cell.endswith("-lab-qemu")
    assert (results / s["run_id"] / cell / "console.log").is_file()
    suites = {r["suite"] for r in s["results"]}
    assert {"gmem-ioctl", "kselftests", "conversions-driver"} <= suites
    assert any(r["outcome"] == "pass" for r in s["results"] if r["suite"] == "kselftests")
    built = Path(s["environment"]["manifest"])
    assert built.is_relative_to(cache_root() / "builds")
    # Nothing new beside the tree or in the checkout, except under results/.
    assert sorted(os.listdir(outer)) == before_outer
    after_repo = checkout_status()
    new = [line for line in after_repo - before_repo if "results/" not in line]
    assert not [n for n in new if "__pycache__" not in n], new


# --- (b) a series from mail onto mainline ------------------------------------------------


def test_a_series_from_mail_onto_mainline(short_tmp: Path) -> None:
    box = hello_series(mainline_tree(), short_tmp / "hello.mbox")
    kernels = {"hello": {"mbox": {"file": str(box), "base": "mainline"}}}
    path = lab_file(short_tmp, kernels, selftests=["gmemlab_hello_test"])
    results = short_tmp / "results"
    done = lab(
        "--lab", str(path), "run", "--kernel", "hello", "--suites", "kselftests",
        "--results", str(results),
    )  # fmt: skip
    s = summary(results)
    assert s["complete"], (s["incomplete_reason"], done.stderr[-3000:])
    assert [p["status"] for p in s["series"]] == ["applied", "applied"]
    md = report(results)
    assert "## Series" in md and "2 applied" in md
    assert "| KVM: guest_memfd: say so when initialised |" in md
    assert "| KVM: selftests: add gmemlab_hello_test |" in md
    dmesg = (results / "latest" / s["cell"] / "dmesg.txt").read_text()
    assert PRINTK in dmesg
    hello = [r for r in s["results"] if r["name"].startswith("gmemlab_hello_test")]
    assert hello and all(r["outcome"] == "pass" for r in hello), hello
    built = json.loads(Path(s["environment"]["manifest"]).read_text())
    assert built["selftests"]["gmemlab_hello_test"]["status"] == "built"
    assert [p["message_id"] for p in built["patches"]] == [p["message_id"] for p in s["series"]]


def test_a_series_that_does_not_apply_fails_the_cell(short_tmp: Path) -> None:
    box = hello_series(mainline_tree(), short_tmp / "hello.mbox")
    broken = short_tmp / "broken.mbox"
    broken.write_text(unappliable(box.read_text()))
    done, results, s = run_failing_series(short_tmp, "broken", broken)
    (r,) = s["results"]
    assert (r["suite"], r["name"], r["outcome"]) == ("series", "patch 1", "fail")
    named = "patch 1/2 'KVM: guest_memfd: say so when initialised' does not apply"
    assert named in r["reason"] and GMEM in r["reason"]
    assert named in report(results) and named in done.stderr
    assert [p["status"] for p in s["series"]] == ["failed", "not-tried"]


# --- (c) a tree that does not compile ----------------------------------------------------


def test_a_tree_with_a_syntax_error_is_a_finding(short_tmp: Path) -> None:
    tree = mainline_tree()
    gmem = (tree / GMEM).read_text()
    broken = gmem.replace(INIT_END, INIT_END.replace("\treturn 0;", "\treturn 0 gmemlab;"))
    edits = [("KVM: guest_memfd: break the build", {GMEM: broken})]
    box = format_patch(tree, edits, short_tmp / "syntax.mbox")
    _, results, s = run_failing_series(short_tmp, "syntax", box)
    (r,) = s["results"]
    assert (r["suite"], r["name"], r["outcome"]) == ("build", "kernel", "fail")
    error = next(ln for ln in r["excerpt"].splitlines() if ": error: " in ln)
    assert "guest_memfd.c:" in error
    assert error in report(results)
    assert r["log"] and (results / "latest" / r["log"]).is_file()


# --- (d) expected features ---------------------------------------------------------------


def test_mainline_expected_to_carry_the_series_fails(short_tmp: Path, manifest: Path) -> None:
    mainline = yaml.safe_load((REPO_ROOT / "lab.yaml").read_text())["kernels"]["mainline"]
    path = lab_file(short_tmp, {"mainline": {**mainline, "expect": ["attrs2_gmem"]}})
    results = short_tmp / "results"
    done = lab(
        "--lab", str(path), "run", "--manifest", str(manifest), "--suites", "hello",
        "--results", str(results),
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]
    s = summary(results)
    (r,) = [r for r in s["results"] if r["suite"] == "expect"]
    assert r["outcome"] == "fail"
    assert r["reason"].startswith("expected feature attrs2_gmem absent: attrs2_gmem=False")
    assert "attrs2_gmem_errno=ENOTTY" in r["reason"]
    assert "expected feature attrs2_gmem absent" in report(results)
    assert [x["outcome"] for x in s["results"] if x["suite"] == "hello"] == ["pass"]
