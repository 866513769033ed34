"""Fixtures several unit-test modules share. None is autouse: a module that wants a
private cache for every test says `pytestmark = pytest.mark.usefixtures("lab_cache")`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.fake_kernel import make_tree


@pytest.fixture
def lab_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """LAB_CACHE pointed at tmp_path/cache, which is returned."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("LAB_CACHE", str(cache))
    return cache


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """The fake kernel tree at tmp_path/linux, a git repository."""
    return make_tree(tmp_path / "linux", git=True)
