"""Where the lab keeps its caches and results."""

from __future__ import annotations

import itertools
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


def new_folder(root: Path, name: str) -> Path:
    """A new folder root/name, or root/name-2, -3... when one of that name exists (two
    matrices or bisections started in the same second never share a folder)."""
    root.mkdir(parents=True, exist_ok=True)
    for n in itertools.count(1):
        folder = root / (name if n == 1 else f"{name}-{n}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise AssertionError("unreachable")
