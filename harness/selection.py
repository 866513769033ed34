"""One suite, or one test of it: `SUITE[:TEST]` on the command line (lab bisect --test,
lab run --suites).

TEST narrows the suite without touching lab.yaml: the run gets a copy of the lab whose
suite lists only that test.
    pytest     a node id relative to the suite's path (test_guest_memfd.py::test_x,
               test_guest_memfd.py::test_x[default-0]) or, without ".py", a -k
               expression (reserved_ignored)
    kselftest  one of the suite's `tests:` (guest_memfd_test)
Other kinds run as a whole: naming a test of them is an error that says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.config import LabConfig
from harness.errors import UserError


@dataclass(frozen=True)
class Selection:
    suite: str
    test: str | None = None

    def __str__(self) -> str:
        return self.suite if self.test is None else f"{self.suite}:{self.test}"


def parse(text: str) -> Selection:
    """SUITE or SUITE:TEST (a pytest node id keeps its own '::')."""
    suite, sep, test = text.strip().partition(":")
    if not suite or (sep and not test.strip()):
        raise UserError(
            f"{text!r}: expected SUITE or SUITE:TEST",
            "e.g. gmem-ioctl or gmem-ioctl:test_guest_memfd.py::test_file_size",
        )
    return Selection(suite, test.strip() or None)


def narrow(lab: LabConfig, sel: Selection, *, only: bool = False) -> LabConfig:
    """The lab with sel.suite narrowed to sel.test; with only, without the other suites
    (so a build makes only the selftests this suite needs)."""
    spec = lab.suites.get(sel.suite)
    if spec is None:
        raise UserError(
            f"unknown suite {sel.suite!r} (known: {', '.join(sorted(lab.suites))})",
            "name a suite from suites: in lab.yaml",
        )
    if sel.test is not None:
        if spec.kind == "pytest":
            spec = spec.model_copy(update={"tests": [sel.test]})
        elif spec.kind == "kselftest":
            if sel.test not in spec.tests:
                raise UserError(
                    f"suite {sel.suite} has no test {sel.test!r} (its tests: "
                    f"{', '.join(spec.tests)})",
                    "name one of its tests, or the suite alone",
                )
            spec = spec.model_copy(update={"tests": [sel.test]})
        else:
            raise UserError(
                f"suite {sel.suite} (kind {spec.kind}) runs as a whole: it has no single test "
                f"to pick ({sel.test!r})",
                f"pass the suite alone: {sel.suite}",
            )
    suites = {sel.suite: spec} if only else {**lab.suites, sel.suite: spec}
    return lab.model_copy(update={"suites": suites})


def cap_timeouts(lab: LabConfig, seconds: int) -> LabConfig:
    """The lab with every suite's timeout_s at most `seconds` (`lab run --suite-timeout`:
    a mutant that hangs the guest should cost minutes, not the suite's full budget)."""
    capped = {
        name: spec.model_copy(update={"timeout_s": min(spec.timeout_s, seconds)})
        for name, spec in lab.suites.items()
    }
    return lab.model_copy(update={"suites": capped})
