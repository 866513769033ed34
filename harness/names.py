"""Names that become file or folder names: one sanitiser and one safe-name rule.

Kernel, config, suite and recipe names from lab.yaml, URLs, package versions and
local paths all end up in folder names under the results root or the cache. Every
such name goes through `slug` here, so nothing the user (or a reviewer's lab.yaml)
writes can put a file outside those roots or smuggle an option into a command line.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

# A lab.yaml name (kernel, config, suite, host, matrix): starts with a letter or digit,
# then letters, digits, '.', '_', '-' (no '/', no '..' prefix, no leading '-').
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._-]+")


def slug(text: str, *, max_len: int = 60) -> str:
    """text with every run of unsafe characters turned into one '_' (never empty, never
    starting with '.' or '-', at most max_len characters, keeping the end)."""
    cleaned = _UNSAFE_RUN.sub("_", text).strip("_.-")[-max_len:].lstrip("_.-")
    return cleaned or "_"


def hashed_slug(text: str, *, max_len: int = 40, digits: int = 10) -> str:
    """A readable slug plus a short hash of the whole text: two different inputs that
    sanitise alike (a path and its neighbour with a space) never share a folder."""
    digest = hashlib.sha256(text.encode()).hexdigest()[:digits]
    return f"{slug(text, max_len=max_len)}-{digest}"


def is_safe_name(name: str) -> bool:
    return bool(SAFE_NAME.fullmatch(name)) and ".." not in name


def kernel_slug(kernel: str) -> str:
    """The folder-name form of a --kernel value: a lab.yaml name as it is; a path (or
    anything else) as its base name plus a short hash of the resolved path, so two trees
    called linux never share a cell folder and no '..' or '/' reaches a path."""
    if is_safe_name(kernel):
        return kernel
    resolved = str(Path(kernel).expanduser().resolve())
    digest = hashlib.sha256(resolved.encode()).hexdigest()[:8]
    return f"{slug(Path(resolved).name or 'root', max_len=40)}-{digest}"
