"""libc calls Python's os/mmap modules lack or hide, via ctypes.

- fallocate with mode bits (os.posix_fallocate cannot punch holes),
- vmsplice (pins user pages behind a pipe: the series' elevated-refcount case),
- mmap/munmap/madvise with raw addresses, because memslots need the
  userspace address of a mapping and mmap.mmap does not expose it without
  pinning the object.

Every wrapper raises OSError with the real errno on failure.
"""

import ctypes
import ctypes.util
import mmap
import os

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
MADV_DONTNEED = 4
MADV_HUGEPAGE = 14
MADV_COLLAPSE = 25
PROT_NONE = 0  # mmap.PROT_NONE only exists from Python 3.13
MAP_FIXED = 0x10  # not exported by the mmap module

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

_libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
_libc.fallocate.restype = ctypes.c_int
_libc.mmap.argtypes = (
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int64,
)
_libc.mmap.restype = ctypes.c_void_p
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_libc.munmap.restype = ctypes.c_int
_libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_libc.madvise.restype = ctypes.c_int


class Iovec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


_libc.vmsplice.argtypes = (ctypes.c_int, ctypes.POINTER(Iovec), ctypes.c_size_t, ctypes.c_uint)
_libc.vmsplice.restype = ctypes.c_ssize_t

MAP_FAILED = ctypes.c_void_p(-1).value


def _raise(what: str) -> None:
    err = ctypes.get_errno()
    raise OSError(err, f"{what}: {os.strerror(err)}")


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    if _libc.fallocate(fd, mode, offset, length) != 0:
        _raise(f"fallocate(mode={mode:#x}, offset={offset:#x}, len={length:#x})")


def punch_hole(fd: int, offset: int, length: int) -> None:
    fallocate(fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, offset, length)


def vmsplice(pipe_w: int, addr: int, length: int) -> int:
    """Splice user memory into a pipe; the pipe holds a page reference until read/closed."""
    iov = Iovec(addr, length)
    ret = int(_libc.vmsplice(pipe_w, ctypes.byref(iov), 1, 0))
    if ret < 0:
        _raise("vmsplice")
    return ret


def madvise(addr: int, length: int, advice: int) -> None:
    if _libc.madvise(addr, length, advice) != 0:
        _raise(f"madvise({advice})")


class Mapping:
    """An mmap()ed region addressed by raw pointer.

    Reads and writes go through ctypes, so touching a page that SIGBUSes kills
    the calling process: only do risky accesses in a forked child (child.py).
    """

    def __init__(
        self,
        length: int,
        prot: int = mmap.PROT_READ | mmap.PROT_WRITE,
        flags: int = mmap.MAP_SHARED,
        fd: int = -1,
        offset: int = 0,
        addr: int = 0,
    ) -> None:
        if fd < 0:
            flags |= mmap.MAP_ANONYMOUS
        ptr = _libc.mmap(addr or None, length, prot, flags, fd, offset)
        if ptr is None or ptr == MAP_FAILED:
            _raise(f"mmap(len={length:#x}, prot={prot:#x}, flags={flags:#x}, fd={fd})")
        self.addr: int = int(ptr)
        self.length = length

    def read(self, offset: int, size: int = 1) -> bytes:
        self._check(offset, size)
        return ctypes.string_at(self.addr + offset, size)

    def write(self, offset: int, data: bytes) -> None:
        self._check(offset, len(data))
        ctypes.memmove(self.addr + offset, data, len(data))

    def read_byte(self, offset: int) -> int:
        return self.read(offset, 1)[0]

    def write_byte(self, offset: int, value: int) -> None:
        self.write(offset, bytes([value & 0xFF]))

    def fill(self, offset: int, size: int, value: int) -> None:
        self._check(offset, size)
        ctypes.memset(self.addr + offset, value & 0xFF, size)

    def unmap(self) -> None:
        if self.addr:
            if _libc.munmap(self.addr, self.length) != 0:
                _raise("munmap")
            self.addr = 0

    def _check(self, offset: int, size: int) -> None:
        if not self.addr:
            raise ValueError("mapping already unmapped")
        if offset < 0 or size < 0 or offset + size > self.length:
            raise IndexError(
                f"access [{offset:#x}, +{size:#x}) outside mapping of {self.length:#x}"
            )

    def __enter__(self) -> "Mapping":
        return self

    def __exit__(self, *exc: object) -> None:
        self.unmap()
