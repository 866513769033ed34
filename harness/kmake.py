"""Running the kernel's make: argv, the fixed build environment, ccache settings, the
up-to-date shortcut and a make log per run.

ccache is shared by all build folders: CCACHE_BASEDIR (the cache root) turns absolute
paths into paths relative to the build folder, and every build folder sits at the same
depth, so a new folder for the same tree still hits the cache. KBUILD_BUILD_TIMESTAMP/
USER/HOST are fixed so two builds of the same inputs produce the same kernel image.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

from harness import arch
from harness.paths import cache_dir, cache_root
from harness.proc import run_logged

FIXED_ENV = {
    "KBUILD_BUILD_TIMESTAMP": "1970-01-01 00:00:00 UTC",
    "KBUILD_BUILD_USER": "gmemlab",
    "KBUILD_BUILD_HOST": "gmemlab",
    # The "#N" in uname -v, otherwise a counter that grows with every relink.
    "KBUILD_BUILD_VERSION": "1",
    "LC_ALL": "C",
}
# Written into the object folder after a successful image build (see kernel_up_to_date).
STAMP = ".gmemlab-built"


def build_env() -> dict[str, str]:
    root = cache_root()
    return {
        **os.environ,
        **FIXED_ENV,
        "CCACHE_DIR": str(cache_dir("ccache")),
        # Absolute paths under the cache become relative to the build folder, and the
        # build folder itself is not hashed: a new folder reuses the cache.
        "CCACHE_BASEDIR": str(root),
        "CCACHE_NOHASHDIR": "1",
        "CCACHE_COMPILERCHECK": "content",
        "CCACHE_MAXSIZE": os.environ.get("CCACHE_MAXSIZE", "10G"),
    }


def kernel_make(src: Path, obj: Path, jobs: int) -> list[str]:
    return [
        "make",
        "-C",
        str(src),
        f"O={obj}",
        f"-j{jobs}",
        "CC=ccache gcc",
        "HOSTCC=ccache gcc",
    ]


def install_config(src: Path, dst: Path) -> None:
    # Only copy when it differs: a new mtime on .config makes kbuild re-run syncconfig.
    if not dst.is_file() or dst.read_bytes() != src.read_bytes():
        shutil.copyfile(src, dst)


def new_log(build_dir: Path) -> Path:
    """A log per run (logs/build-<UTC time>.log); build.log points at the newest.

    Another process's run (e.g. `lab run` after `lab build`) must not erase the log
    of the run that really compiled something.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    log = build_dir / "logs" / f"build-{stamp}-{os.getpid()}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    link = build_dir / "build.log"
    tmp = link.with_name("build.log.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(log.relative_to(build_dir))
    tmp.replace(link)
    return log


def make_image(
    make: list[str], src: Path, obj: Path, config_hash: str, log: Path, env: Mapping[str, str]
) -> bool:
    """make the kernel image unless kernel_up_to_date says it is; True if make ran."""
    stamp = obj / STAMP
    stamp_text = json.dumps({"make": make, "env": FIXED_ENV, "config": config_hash})
    if kernel_up_to_date(src, obj, stamp, stamp_text):
        return False
    started = time.time()
    stamp.unlink(missing_ok=True)
    run_logged(
        [*make, arch.HOST.kernel_image],
        log=log,
        label="build: kernel",
        env=env,
        interesting=kbuild_line,
    )
    stamp.write_text(stamp_text)
    # The start time: an edit made while make ran is seen next time.
    os.utime(stamp, (started, started))
    return True


def install_headers(make: list[str], obj: Path, log: Path, env: Mapping[str, str]) -> None:
    """The build's own uapi headers under obj/usr, which the selftests compile against."""
    run_logged(
        [*make, "headers_install", f"INSTALL_HDR_PATH={obj / 'usr'}"],
        log=log,
        label="build: headers_install",
        env=env,
        interesting=kbuild_line,
    )


def kernel_up_to_date(src: Path, obj: Path, stamp: Path, stamp_text: str) -> bool:
    """True when the last kernel build succeeded with these settings and no file in the
    tree is newer than it.

    Kbuild would conclude the same, but its walk over every directory takes 15-30 s on
    two cores; a stat of the tree takes about one. make uses mtimes too, so this misses
    nothing make would have caught (an edit, a touch, a new file).
    """
    try:
        if stamp.read_text() != stamp_text:
            return False
        built = stamp.stat().st_mtime_ns
    except FileNotFoundError:
        return False
    needed = (obj / arch.HOST.kernel_image_path, obj / "vmlinux", obj / "System.map")
    if not all(p.is_file() for p in needed) or (obj / ".config").stat().st_mtime_ns > built:
        return False
    return not _newer_file(src, built)


def _newer_file(root: Path, than_ns: int) -> bool:
    stack = [str(root)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name != ".git":
                        stack.append(entry.path)
                elif entry.stat(follow_symlinks=False).st_mtime_ns > than_ns:
                    return True
    return False


def kbuild_line(line: str) -> bool:
    # Kbuild's quiet output: "  CC      kernel/fork.o"; the status line shows the target.
    return line.startswith("  ") and line[2:3].isupper()
