"""`lab` as a subprocess, and its run's summary.json, for the scenario tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness.paths import REPO_ROOT

LAB = [sys.executable, "-m", "harness.cli"]


def lab(*args: str, timeout: float = 5400) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LAB, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
    )


def summary(results: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((results / "latest" / "summary.json").read_text())
    return data
