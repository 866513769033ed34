"""Where the lab keeps its caches and results."""

from __future__ import annotations

import os
from pathlib import Path

# The checkout's top level: lab.yaml, kernel-config/, images/, tests/guest live here.
REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_root() -> Path:
    """$LAB_CACHE, else ~/.cache/gmemlab (DESIGN.md, "Caches")."""
    env = os.environ.get("LAB_CACHE")
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "gmemlab"
    root.mkdir(parents=True, exist_ok=True)
    return root


def cache_dir(*parts: str) -> Path:
    """A folder under the cache root, created on first use."""
    path = cache_root().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
