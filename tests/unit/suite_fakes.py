"""Helpers for the suite-kind tests: a mainline build's selftests, a Ran with just an
exit status, result rows as tuples, and a Context around the fake remote and a real
Recorder."""

from __future__ import annotations

from pathlib import Path

from harness import suites
from harness.remote import Ran
from harness.results import Outcome, Recorder, TestResult
from tests.unit.fakes import FakeBuild, FakeRemote

# A mainline build's selftests (fake_build's statuses): the series-only one is absent.
MAINLINE_SELFTESTS = {
    "guest_memfd_test": "built",
    "x86/private_mem_conversions_test": "built",
    "guest_memfd_conversions_test": "absent",
}


def ran(code: int | None, timed_out: bool = False) -> Ran:
    return Ran("./t", code, "", "", 1.0, timed_out=timed_out)


def rows(results: list[TestResult]) -> list[tuple[str, str, str]]:
    return [(r.name, r.outcome.value, r.reason) for r in results]


def context(tmp_path: Path, remote: FakeRemote, build: FakeBuild | None) -> suites.Context:
    rec = Recorder(tmp_path / "results", "cell", run_id="r")

    def on_lost() -> tuple[Outcome, str, str]:
        return Outcome.ERROR, "the VM went away", "console tail"

    return suites.Context(remote, rec, build, tmp_path, on_lost)
