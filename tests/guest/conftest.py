"""pytest wiring for the guest suite: feature probe, per-test timeout, skips.

Runs with pytest alone (no plugins). The probe runs once per session; its
result prints in the report header and becomes JUnit testsuite properties.
"""

import os
import signal
import sys
from collections.abc import Callable, Iterator
from types import FrameType

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from gmemsuite import get_features
from kvm.probe import Features

DEFAULT_TIMEOUT = float(os.environ.get("GMEMLAB_TEST_TIMEOUT", "120"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "timeout(seconds): per-test timeout (default 120s)")
    config.addinivalue_line("markers", "vcpu: needs a running vCPU")
    config.addinivalue_line("markers", "series: needs the in-place conversion series")


def pytest_report_header(config: pytest.Config) -> list[str]:
    feats = get_features()
    return ["gmemlab probed features:"] + [f"  {k} = {v}" for k, v in feats.summary().items()]


@pytest.fixture(scope="session")
def features() -> Features:
    return get_features()


@pytest.fixture(scope="session", autouse=True)
def _record_features(record_testsuite_property: Callable[[str, object], None]) -> None:
    for key, value in get_features().summary().items():
        record_testsuite_property(f"gmemlab.{key}", value)


class TestTimeout(Exception):
    pass


@pytest.fixture(autouse=True)
def _timeout(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test gets a SIGALRM deadline; a blocking ioctl is interrupted by it."""
    marker = request.node.get_closest_marker("timeout")
    seconds = float(marker.args[0]) if marker else DEFAULT_TIMEOUT

    def expire(signum: int, frame: FrameType | None) -> None:
        raise TestTimeout(f"test exceeded its {seconds:.0f}s timeout")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
