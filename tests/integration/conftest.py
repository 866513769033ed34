"""Fixtures the scenario tests share (a module may define its own of the same name)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.labcli import lab


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    # The VM's QMP socket lives in the results folder and a UNIX socket path must
    # stay under 108 bytes, which pytest's tmp_path does not.
    path = Path(tempfile.mkdtemp(prefix="gl-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def manifest() -> Path:
    """`lab build --kernel mainline`'s manifest, built once per module."""
    done = lab("build", "--kernel", "mainline")
    assert done.returncode == 0, done.stderr[-3000:]
    return Path(done.stdout.strip().splitlines()[-1])
