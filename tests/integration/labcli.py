"""`lab` as a subprocess, the lab.yaml it is given and its run's summary.json, for the
scenario tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from harness.paths import REPO_ROOT

LAB = [sys.executable, "-m", "harness.cli"]


def lab(*args: str, timeout: float = 5400) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LAB, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
    )


def lab_yaml() -> dict[str, Any]:
    """The checkout's lab.yaml, for a test to change."""
    data: dict[str, Any] = yaml.safe_load((REPO_ROOT / "lab.yaml").read_text())
    return data


def write_lab(folder: Path, data: dict[str, Any]) -> Path:
    """data as folder/lab.yaml, with the checkout's kernel-config/ and images/ linked
    beside it (the same recipe hash: the cached image is reused)."""
    for sub in ("kernel-config", "images"):
        (folder / sub).symlink_to(REPO_ROOT / sub)
    path = folder / "lab.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def summary(results: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((results / "latest" / "summary.json").read_text())
    return data
