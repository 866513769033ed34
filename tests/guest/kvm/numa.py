"""NUMA memory-policy syscalls (x86_64 numbers) for the guest_memfd mbind checks."""

import ctypes
import os
import re

from .libc import _libc

SYS_MBIND = 237
SYS_GET_MEMPOLICY = 239
SYS_MOVE_PAGES = 279

MPOL_DEFAULT = 0
MPOL_BIND = 2
MPOL_INTERLEAVE = 3
MPOL_F_ADDR = 1 << 1

NODE_DIR = "/sys/devices/system/node"

_libc.syscall.restype = ctypes.c_long


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def mbind(
    addr: int, length: int, mode: int, nodemask: int | None, maxnode: int, flags: int = 0
) -> None:
    mask = ctypes.c_ulong(nodemask or 0)
    _check(
        _libc.syscall(
            ctypes.c_long(SYS_MBIND),
            ctypes.c_void_p(addr),
            ctypes.c_ulong(length),
            ctypes.c_int(mode),
            ctypes.byref(mask) if nodemask is not None else None,
            ctypes.c_ulong(maxnode),
            ctypes.c_uint(flags),
        ),
        "mbind",
    )


def get_mempolicy(addr: int, maxnode: int) -> tuple[int, int]:
    """(policy, nodemask) of the VMA at addr (MPOL_F_ADDR)."""
    policy = ctypes.c_int(0)
    mask = ctypes.c_ulong(0)
    _check(
        _libc.syscall(
            ctypes.c_long(SYS_GET_MEMPOLICY),
            ctypes.byref(policy),
            ctypes.byref(mask),
            ctypes.c_ulong(maxnode),
            ctypes.c_void_p(addr),
            ctypes.c_int(MPOL_F_ADDR),
        ),
        "get_mempolicy",
    )
    return policy.value, mask.value


def move_pages_status(addrs: list[int]) -> list[int]:
    """The node of each page (move_pages with nodes=NULL queries only)."""
    count = len(addrs)
    pages = (ctypes.c_void_p * count)(*addrs)
    status = (ctypes.c_int * count)()
    _check(
        _libc.syscall(
            ctypes.c_long(SYS_MOVE_PAGES),
            ctypes.c_int(0),
            ctypes.c_ulong(count),
            pages,
            None,
            status,
            ctypes.c_int(0),
        ),
        "move_pages",
    )
    return list(status)


def numa_available() -> bool:
    """The selftests' probe: a dummy get_mempolicy() fails only with ENOSYS/EPERM."""
    ret = _libc.syscall(
        ctypes.c_long(SYS_GET_MEMPOLICY), None, None, ctypes.c_ulong(0), None, ctypes.c_int(0)
    )
    return ret == 0 or ctypes.get_errno() not in (38, 1)  # ENOSYS, EPERM


def max_node() -> int:
    try:
        names = os.listdir(NODE_DIR)
    except OSError:
        return 0
    ids = [int(m.group(1)) for n in names if (m := re.fullmatch(r"node(\d+)", n))]
    return max(ids, default=0)


def is_multi_numa_node_system() -> bool:
    return numa_available() and max_node() >= 1
