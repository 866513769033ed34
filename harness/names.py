"""Names that become file or folder names: one sanitiser and one safe-name rule.

Kernel, config, suite and recipe names from lab.yaml, URLs, package versions and
local paths all end up in folder names under the results root or the cache. Every
such name goes through this module (`slug`, and `folder` for a whole folder name), so
nothing the user (or a reviewer's lab.yaml) writes can put a file outside those roots
or smuggle an option into a command line. The folder names the lab derives:

    cell            <kernel>-<config>-<target>        results/<run-id>/<cell>/
    run id          <time>-<pid>, or the caller's     results/<run-id>/
    build folder    <kernel>-<key>                    $LAB_CACHE/builds/
    latest link     latest-<kernel>-<config>          $LAB_CACHE/builds/

where <kernel> is `kernel_slug` of --kernel (a lab.yaml name as it is, a path as its
base name plus a hash of the resolved path).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

# A lab.yaml name (kernel, config, suite, host, matrix): starts with a letter or digit,
# then letters, digits, '.', '_', '-' (no '/', no '..' prefix, no leading '-').
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# A derived folder name: the same alphabet, longer (a cell joins three names).
_FOLDER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,159}$")
# Runs of unsafe characters, and runs of dots ('..' is never part of a derived name).
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._-]+|\.{2,}")


def slug(text: str, *, max_len: int = 60) -> str:
    """text with every run of unsafe characters (or of dots) turned into one '_' (never
    empty, never starting with '.' or '-', no '..', at most max_len characters, keeping
    the end)."""
    cleaned = _UNSAFE_RUN.sub("_", text).strip("_.-")[-max_len:].lstrip("_.-")
    return cleaned or "_"


def hashed_slug(text: str, *, max_len: int = 40, digits: int = 10) -> str:
    """A readable slug plus a short hash of the whole text: two different inputs that
    sanitise alike (a path and its neighbour with a space) never share a folder."""
    digest = hashlib.sha256(text.encode()).hexdigest()[:digits]
    return f"{slug(text, max_len=max_len)}-{digest}"


def is_safe_name(name: str) -> bool:
    return bool(SAFE_NAME.fullmatch(name)) and ".." not in name


def is_folder_name(name: str) -> bool:
    """name can be one path component under a root the lab owns, as it is."""
    return bool(_FOLDER.fullmatch(name)) and ".." not in name


def folder(name: str) -> str:
    """The one sanitiser for a derived folder name: name itself when it is already a
    plain name, else a slug of it plus a hash of the original (never '/', '..', a
    leading '-' or '.', or a name that collides with another input's)."""
    return name if is_folder_name(name) else hashed_slug(name, max_len=60, digits=10)


def kernel_slug(kernel: str) -> str:
    """The folder-name form of a --kernel value: a lab.yaml name as it is; a path (or
    anything else) as its base name plus a short hash of the resolved path, so two trees
    called linux never share a cell folder and no '..' or '/' reaches a path."""
    if is_safe_name(kernel):
        return kernel
    try:
        resolved = str(Path(kernel).expanduser().resolve())
    except (OSError, RuntimeError, ValueError):  # a NUL byte, a symlink loop, no $HOME
        resolved = kernel
    digest = hashlib.sha256(resolved.encode()).hexdigest()[:8]
    return f"{slug(Path(resolved).name or 'root', max_len=40)}-{digest}"


def cell_name(kernel: str, config: str, target: str) -> str:
    """A cell's folder name: <kernel>-<config>-<target>, each part sanitised."""
    return folder(f"{kernel_slug(kernel)}-{folder(config)}-{folder(target)}")


def build_folder(kernel: str, key: str) -> str:
    """A build folder's name under the cache's builds/: <kernel>-<key>."""
    return folder(f"{kernel_slug(kernel)}-{key}")


def latest_link(kernel: str, config: str) -> str:
    """The builds/ link to a kernel and config set's newest build."""
    return folder(f"latest-{kernel_slug(kernel)}-{folder(config)}")
