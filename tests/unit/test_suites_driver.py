"""Kind conversions-driver: one result per sub-run, the stop at the first failure, and
the tree's driver run with the right interpreter."""

from __future__ import annotations

from pathlib import Path

from harness import suites
from harness.config import SuiteSpec
from harness.results import Outcome
from harness.suites.driver import classify_driver
from tests.unit.fakes import FakeRemote, Reply, fake_build
from tests.unit.suite_fakes import context, ran, rows

DRIVER_OK = """\
$ timeout -k 10 1800 python3 ./private_mem_conversions_test.py
skipping anonymous_hugetlb backing source type
./private_mem_conversions_test -s anonymous -m 1 -n 1
Random seed: 0x6b8b4567
./private_mem_conversions_test -s anonymous -m 1 -n 4
./private_mem_conversions_test -s anonymous -m 4 -n 4

./private_mem_conversions_test -s shmem -m 1 -n 1
"""


def test_driver_subruns_each_get_a_result() -> None:
    got = rows(classify_driver(ran(0), DRIVER_OK, 1800))
    assert got == [
        ("-s anonymous_hugetlb", "skip", "skipping anonymous_hugetlb backing source type"),
        ("-s anonymous -m 1 -n 1", "pass", ""),
        ("-s anonymous -m 1 -n 4", "pass", ""),
        ("-s anonymous -m 4 -n 4", "pass", ""),
        ("-s shmem -m 1 -n 1", "pass", ""),
    ]


def test_driver_stops_at_the_first_failure() -> None:
    out = (
        "./private_mem_conversions_test -s anonymous -m 1 -n 1\n"
        "./private_mem_conversions_test -s anonymous -m 1 -n 4\n"
        "==== Test Assertion Failure ====\n"
        "Test failed for source type 'anonymous'. Command: ...\n"
    )
    got = rows(classify_driver(ran(1), out, 1800))
    assert got[0] == ("-s anonymous -m 1 -n 1", "pass", "")
    assert got[1][:2] == ("-s anonymous -m 1 -n 4", "fail")
    assert got[2] == (
        "-s anonymous -m 4 -n 4",
        "skip",
        "not run: the driver stopped after -s anonymous -m 1 -n 4",
    )


def test_driver_that_ran_nothing_is_missing() -> None:
    assert rows(classify_driver(ran(0), "", 60))[0][:2] == ("driver", "missing")


def test_driver_suite_without_driver_skips(tmp_path: Path) -> None:
    build = fake_build(tmp_path, {"x86/private_mem_conversions_test": "built"})
    run = suites.run_suite(
        "conversions-driver",
        SuiteSpec(kind="conversions-driver"),
        context(tmp_path, FakeRemote(lambda a: Reply()), build),
    )
    assert rows(run.results)[0][:2] == ("driver", "skip")


def test_driver_suite_runs_the_tree_driver(tmp_path: Path) -> None:
    build = fake_build(
        tmp_path,
        {"x86/private_mem_conversions_test": "built"},
        driver="x86/private_mem_conversions_test.py",
    )
    remote = FakeRemote(lambda a: Reply(0, DRIVER_OK))
    run = suites.run_suite(
        "conversions-driver", SuiteSpec(kind="conversions-driver"), context(tmp_path, remote, build)
    )
    assert remote.calls == [["python3", "./private_mem_conversions_test.py"]]
    assert sum(r.outcome is Outcome.PASS for r in run.results) == 4
