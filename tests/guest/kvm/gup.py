"""Long-term page pins through CONFIG_GUP_TEST (/sys/kernel/debug/gup_test).

The series' v8 selftests pin pages this way (pin_pages()/unpin_pages() in
kvm_util.c): PIN_LONGTERM_TEST_START pins [addr, addr + size) with
pin_user_pages(FOLL_LONGTERM | FOLL_WRITE), PIN_LONGTERM_TEST_STOP unpins
everything the file pinned. The pin holds an extra folio reference, which is
what guest_memfd's to-private refcount check must refuse.
"""

import os

from . import api, uapi


def available() -> bool:
    return os.access(uapi.GUP_TEST_PATH, os.R_OK | os.W_OK)


class LongtermPin:
    """Pin a user range while the context is open (faults the pages in, for write)."""

    def __init__(self, addr: int, size: int) -> None:
        self.addr = addr
        self.size = size
        self.fd = -1

    def __enter__(self) -> "LongtermPin":
        self.fd = os.open(uapi.GUP_TEST_PATH, os.O_RDWR | os.O_CLOEXEC)
        pin = uapi.PinLongtermTest(
            addr=self.addr, size=self.size, flags=uapi.PIN_LONGTERM_TEST_FLAG_USE_WRITE
        )
        try:
            api.ioctl_struct(self.fd, uapi.PIN_LONGTERM_TEST_START, pin)
        except OSError:
            os.close(self.fd)
            raise
        return self

    def unpin(self) -> None:
        if self.fd >= 0:
            try:
                api.ioctl_int(self.fd, uapi.PIN_LONGTERM_TEST_STOP)
            finally:
                os.close(self.fd)
                self.fd = -1

    def __exit__(self, *exc: object) -> None:
        self.unpin()
