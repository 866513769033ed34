"""Can this host build a kernel? Tools, headers and free disk, checked before a build.

Every missing tool and header is named in one message with the Debian packages that
bring them, so a fresh machine needs one round of `apt install`, not one per tool.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from harness.errors import InfraError, UserError
from harness.paths import cache_root
from harness.proc import TOOL_PACKAGES

# A defconfig-sized build without DWARF takes ~3 GiB; keep room for the selftests,
# ccache growth and a second build folder.
MIN_FREE_GIB = 8
BUILD_TOOLS = ("make", "gcc", "ld", "flex", "bison", "bc", "perl", "ccache")
# Headers the kernel build needs (objtool: libelf; module signing / certs: openssl).
BUILD_HEADERS = {
    "/usr/include/gelf.h": "libelf-dev",
    "/usr/include/openssl/opensslv.h": "libssl-dev",
}
# Build tools that proc.TOOL_PACKAGES (shared with the other stages) does not list.
_TOOL_EXTRA = {"ld": "binutils", "perl": "perl"}


def check_host() -> None:
    """All missing tools and headers in one message, then the disk space."""
    missing = [t for t in BUILD_TOOLS if shutil.which(t) is None]
    packages = {TOOL_PACKAGES.get(t, _TOOL_EXTRA.get(t, t)) for t in missing}
    missing_headers = [h for h in BUILD_HEADERS if not Path(h).is_file()]
    packages |= {BUILD_HEADERS[h] for h in missing_headers}
    if missing or missing_headers:
        raise UserError(
            f"missing build tools: {', '.join(missing + missing_headers)}",
            f"install the Debian packages {' '.join(sorted(packages))} (or run `make deps`)",
        )
    free = shutil.disk_usage(cache_root()).free
    if free < MIN_FREE_GIB << 30:
        raise InfraError(
            f"only {free / (1 << 30):.1f} GiB free under {cache_root()}; a kernel build "
            f"needs about {MIN_FREE_GIB} GiB",
            "free some space (old folders under builds/ can go) or point LAB_CACHE elsewhere",
        )
