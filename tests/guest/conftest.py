"""pytest wiring for the guest suite: feature probe, per-test timeout, skips.

Runs with pytest alone (no plugins). The probe runs once per session; its
result prints in the report header and becomes JUnit testsuite properties.
"""

import fnmatch
import json
import os
import platform
import signal
import sys
from collections.abc import Callable, Iterator
from types import FrameType

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from gmemsuite import get_features
from kvm.probe import Features

DEFAULT_TIMEOUT = float(os.environ.get("GMEMLAB_TEST_TIMEOUT", "120"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--known-differences",
        default=os.environ.get("GMEMLAB_KNOWN_DIFFERENCES"),
        metavar="FILE",
        help="JSON list of (kernel glob, test glob, reason): matching tests become strict "
        "xfails on matching kernels (e.g. tests/guest/known_differences.json on 6.18 hosts)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    path = config.getoption("--known-differences")
    if not path:
        return
    with open(path) as f:
        differences = json.load(f)["differences"]
    release = platform.release()
    for item in items:
        name = item.nodeid.split("tests/guest/")[-1]
        for diff in differences:
            if fnmatch.fnmatch(release, diff["kernel"]) and fnmatch.fnmatch(name, diff["test"]):
                reason = f"known difference on {release}: {diff['reason']}"
                item.add_marker(pytest.mark.xfail(strict=True, reason=reason))


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
