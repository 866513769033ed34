"""A planted regression, for real: lab run --ab and lab compare on the offline 7.3 tree.

The series is a copy of the mainline tree with one changed line in guest_memfd.c
(twin_trees.PLANTED_LINE: kvm_gmem_create rejects a nonzero reserved[0], which 7.3
ignores); the base is `mainline` itself. Only the gmem-ioctl suite runs. The twin builds
incrementally from the shared ccache (twin_trees explains how), never cold.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import twin_trees

pytestmark = [pytest.mark.slow, pytest.mark.scenario]


@pytest.fixture(scope="module")
def ab_run() -> Iterator[tuple[Path, int, float, str]]:
    # Short: the VM's QMP socket lives in the results folder (UNIX paths < 108 bytes).
    tmp = Path(tempfile.mkdtemp(prefix="gl-ab-", dir="/tmp"))
    results = tmp / "results"
    tree = twin_trees.planted_tree()
    start = time.monotonic()
    done = twin_trees.lab(
        "run", "--kernel", str(tree), "--ab", "mainline", "--suites", "gmem-ioctl",
        "--results", str(results),
    )  # fmt: skip
    wall = time.monotonic() - start
    print(f"lab run --ab: exit {done.returncode} in {wall:.0f}s")
    (tmp / "ab.stderr").write_text(done.stderr)
    yield results, done.returncode, wall, done.stderr
    twin_trees.clean_up(tmp)


def test_ab_report_leads_with_the_regressed_tests(ab_run: tuple[Path, int, float, str]) -> None:
    results, code, _wall, stderr = ab_run
    assert code == 1, stderr[-4000:]
    series = (results / "latest").resolve()
    md = (series / "report.md").read_text()
    first_section = md[md.index("\n## ") + 1 :]
    first_section = first_section[: first_section.index("\n## ", 1)]
    assert first_section.startswith("## Comparison: base mainline")
    assert "### Regressions (2)" in first_section
    for test in twin_trees.PLANTED_TESTS:
        assert f"| gmem-ioctl | {test} | pass | fail |" in first_section
    data = json.loads((series / "ab.json").read_text())
    assert {t for _, t in data["regressions"]} == twin_trees.PLANTED_TESTS
    assert data["exit_code"] == 1 and data["base"]["exit_code"] == 0
    html = (series / "report.html").read_text()
    assert html.index("Regressions (2)") < html.index("<h2>Failures</h2>")


def test_compare_shows_the_planted_regression_and_nothing_else(
    ab_run: tuple[Path, int, float, str],
) -> None:
    results, _, _, _ = ab_run
    series = (results / "latest").resolve()
    base = results / f"{series.name}-base"
    done = twin_trees.lab("compare", str(base), str(series), "--results", str(results))
    assert done.returncode == 1, done.stderr[-3000:]
    listed = re.findall(r"^### (.+) \((\d+)\)$", done.stdout, re.MULTILINE)
    assert listed == [("Regressions", "2")], done.stdout[-4000:]
    rows = re.findall(r"^\| gmem-ioctl \| (\S+) \| pass \| fail \|", done.stdout, re.MULTILINE)
    assert set(rows) == twin_trees.PLANTED_TESTS
    assert "**Regressed.** 2 regressions ·" in done.stdout
