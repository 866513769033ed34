"""What the chosen suites need in the guest: pushed under PAYLOAD in one tar stream."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from harness.config import SuiteSpec
from harness.kselftest_build import DRIVER_BINARY
from harness.suites.base import SELFTESTS, Selftests
from harness.suites.driver import find_driver
from harness.suites.pytest_suite import guest_path


def payload(
    suites: Mapping[str, SuiteSpec], build: Selftests | None, repo_root: Path
) -> list[tuple[Path, str]]:
    """What the chosen suites need in the guest, as (local path, name under PAYLOAD)."""
    items: dict[str, Path] = {}
    for spec in suites.values():
        if spec.kind == "pytest":
            path = guest_path(spec)
            items[path] = repo_root / path
        wanted: list[str] = []
        if spec.kind == "kselftest" and build is not None:
            wanted = [t for t in spec.tests if build.selftests.get(t) == "built"]
        if spec.kind == "conversions-driver" and (driver := find_driver(build)):
            wanted = [driver, DRIVER_BINARY]
        for test in wanted:
            assert build is not None
            local = build.selftests_dir / test
            if local.exists():
                items[f"{SELFTESTS}/{test}"] = local
    return [(local, arcname) for arcname, local in sorted(items.items())]
