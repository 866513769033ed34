"""The payload tar stream: packing files for the guest, safely unpacking what comes back."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable
from pathlib import Path

from harness.errors import InfraError


def _skip_caches(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    name = info.name
    if "__pycache__" in name or name.endswith((".pyc", ".o", ".d")):
        return None
    return info


def pack(items: Iterable[tuple[Path, str]]) -> bytes:
    """A gzip'd tar (fast level: the guest unpacks it under emulation) of items."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for local, arcname in items:
            tar.add(local, arcname=arcname, filter=_skip_caches)
    return buf.getvalue()


def unpack(data: bytes, dest: Path) -> list[Path]:
    """Extract a tar safely: the 'data' filter refuses absolute paths, .. and devices."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            members = [m for m in tar.getmembers() if m.isfile()]
            tar.extractall(dest, members=members, filter="data")
    except tarfile.TarError as exc:
        raise InfraError(
            f"refusing the archive sent back by the guest: {exc}",
            "the guest's results folder holds something other than plain files",
        ) from None
    return [dest / m.name for m in members]
