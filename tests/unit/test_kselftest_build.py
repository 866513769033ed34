"""Which selftests the build stage builds: lab.yaml's suites decide, in their order."""

from __future__ import annotations

from harness import config, kselftest_build
from harness.config import LabConfig, SuiteSpec


def lab_with(suites: dict[str, SuiteSpec]) -> LabConfig:
    return config.load().model_copy(update={"suites": suites})


def test_wanted_is_the_kselftest_suites_tests_and_the_driver_binary() -> None:
    # The repository's lab.yaml: its kselftests suite already names the driver's binary.
    assert kselftest_build.wanted(config.load()) == (
        "guest_memfd_test",
        "guest_memfd_conversions_test",
        # Where v8 and later put the series' own test (RFC v3 had it at the top level).
        "x86/guest_memfd_conversions_test",
        "x86/private_mem_conversions_test",
        "x86/private_mem_kvm_exits_test",
        "pre_fault_memory_test",
    )


def test_wanted_names_each_test_once_and_nothing_for_other_kinds() -> None:
    suites = {
        "p": SuiteSpec(kind="pytest"),
        "a": SuiteSpec(kind="kselftest", tests=["b_test", "a_test"]),
        "d": SuiteSpec(kind="conversions-driver"),
        "again": SuiteSpec(kind="kselftest", tests=["a_test", kselftest_build.DRIVER_BINARY]),
        "c": SuiteSpec(kind="command", argv=["true"]),
    }
    assert kselftest_build.wanted(lab_with(suites)) == (
        "b_test",
        "a_test",
        kselftest_build.DRIVER_BINARY,
    )
    assert kselftest_build.wanted(lab_with({"p": SuiteSpec(kind="pytest")})) == ()
