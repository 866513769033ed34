"""SUITE[:TEST]: one suite or one test of it, without touching lab.yaml."""

from __future__ import annotations

import pytest

from harness import config, selection
from harness.config import SuiteSpec
from harness.errors import UserError
from harness.suites.pytest_suite import targets


def test_parse_keeps_a_node_id_whole() -> None:
    sel = selection.parse("gmem-ioctl:test_guest_memfd.py::test_file_size[default-noflags]")
    assert sel.suite == "gmem-ioctl"
    assert sel.test == "test_guest_memfd.py::test_file_size[default-noflags]"
    assert str(sel) == "gmem-ioctl:test_guest_memfd.py::test_file_size[default-noflags]"
    assert selection.parse(" kselftests ") == selection.Selection("kselftests")
    for bad in ("", ":x", "gmem-ioctl:", "gmem-ioctl: "):
        with pytest.raises(UserError, match="SUITE or SUITE:TEST"):
            selection.parse(bad)


def test_narrow_a_pytest_suite_to_a_node_id() -> None:
    lab = config.load()
    sel = selection.parse("gmem-ioctl:test_guest_memfd.py::test_file_size")
    narrowed = selection.narrow(lab, sel)
    spec = narrowed.suites["gmem-ioctl"]
    assert spec.tests == ["test_guest_memfd.py::test_file_size"]
    assert targets(spec) == ["tests/guest/test_guest_memfd.py::test_file_size"]
    assert set(narrowed.suites) == set(lab.suites)  # the others stay
    assert lab.suites["gmem-ioctl"].tests == []  # the loaded lab is untouched
    only = selection.narrow(lab, sel, only=True)
    assert set(only.suites) == {"gmem-ioctl"}


def test_cap_timeouts_lowers_only_the_longer_budgets() -> None:
    lab = config.load()
    capped = selection.cap_timeouts(lab, 120)
    for name, spec in lab.suites.items():
        assert capped.suites[name].timeout_s == min(spec.timeout_s, 120)
    assert max(s.timeout_s for s in lab.suites.values()) > 120  # the cap did something
    assert selection.cap_timeouts(lab, 10**6).suites == lab.suites


def test_a_k_expression_and_the_whole_suite() -> None:
    spec = SuiteSpec(kind="pytest", path="tests/guest", tests=["reserved_ignored"])
    assert targets(spec) == ["tests/guest", "-k", "(reserved_ignored)"]
    assert targets(SuiteSpec(kind="pytest", path="tests/guest")) == ["tests/guest"]


def test_narrow_a_kselftest_suite_and_refuse_the_rest() -> None:
    lab = config.load()
    narrowed = selection.narrow(lab, selection.parse("kselftests:guest_memfd_test"), only=True)
    assert narrowed.suites["kselftests"].tests == ["guest_memfd_test"]
    with pytest.raises(UserError, match="has no test 'nope'"):
        selection.narrow(lab, selection.parse("kselftests:nope"))
    with pytest.raises(UserError, match="runs as a whole"):
        selection.narrow(lab, selection.parse("conversions-driver:x"))
    with pytest.raises(UserError, match="unknown suite"):
        selection.narrow(lab, selection.parse("nope"))
