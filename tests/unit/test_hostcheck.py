"""Host checks before a build: every missing tool in one message, low disk space."""

from __future__ import annotations

import shutil

import pytest

from harness import hostcheck
from harness.errors import InfraError, UserError

pytestmark = pytest.mark.usefixtures("lab_cache")


def test_missing_tools_one_message_with_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda t: None if t in ("flex", "bc") else real(t))
    with pytest.raises(UserError) as err:
        hostcheck.check_host()
    text = err.value.message
    assert "flex" in text and "bc" in text and "make deps" in text


def test_tools_missing_from_the_shared_table_name_their_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda t: None if t == "ld" else real(t))
    with pytest.raises(UserError) as err:
        hostcheck.check_host()
    assert "ld" in err.value.message and "binutils" in (err.value.fix or "")


def test_low_disk_space_is_infra_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1, 1, 1))
    with pytest.raises(InfraError, match="GiB free"):
        hostcheck.check_host()
