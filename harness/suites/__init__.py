"""The suite kinds of lab.yaml `suites:`, run in the guest over a Remote.

One module per kind; KINDS maps lab.yaml's `kind:` to its run function:
    pytest_suite.py  pytest: the guest ioctl suite (tests/guest) with JUnit output
    kselftest.py     kselftest: each built KVM selftest with its own timeout; exit 4 =
                     skip; KTAP parsed per case where the test prints it
    driver.py        conversions-driver: the tree's private_mem_conversions_test driver
                     (.py or .sh), each sub-run (backing source x vCPUs x memslots) its
                     own result
    command.py       command: an argv (test-only suites: a deliberate failure, a sleep)
and beside them base.py (guest paths, Context, SuiteRun, the per-suite runner they
share), payload.py (what is pushed to the guest) and dmesg.py (the dmesg bracket the
runner puts around each suite).

Every result goes to the Recorder the moment it is known. A suite that loses the VM
stops at once and says so (SuiteRun.lost); the runner decides what happens next.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from harness.config import SuiteSpec
from harness.suites import command, driver, kselftest, pytest_suite
from harness.suites.base import (
    GUEST_ROOT,
    OUTPUT,
    PAYLOAD,
    Context,
    LostClassifier,
    RemoteRunner,
    Selftests,
    Suite,
    SuiteRun,
)
from harness.suites.driver import classify_driver, find_driver
from harness.suites.kselftest import classify_selftest
from harness.suites.payload import payload

# The kind registry: lab.yaml's `kind:` -> the function that runs a suite of that kind.
KINDS: dict[str, Callable[[Suite], None]] = {
    "pytest": pytest_suite.run,
    "kselftest": kselftest.run,
    "conversions-driver": driver.run,
    "command": command.run,
}


def run_suite(name: str, spec: SuiteSpec, ctx: Context) -> SuiteRun:
    suite = Suite(name, spec, ctx)
    start = time.monotonic()
    try:
        KINDS[spec.kind](suite)
    finally:
        suite.run.seconds = time.monotonic() - start
    return suite.run


__all__ = [
    "GUEST_ROOT",
    "KINDS",
    "OUTPUT",
    "PAYLOAD",
    "Context",
    "LostClassifier",
    "RemoteRunner",
    "Selftests",
    "SuiteRun",
    "classify_driver",
    "classify_selftest",
    "find_driver",
    "payload",
    "run_suite",
]
