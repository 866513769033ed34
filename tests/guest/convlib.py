"""The primitives of guest_memfd_conversions_test.c, over the Python mini guest.

One ConversionEnv is the C fixture: a SW_PROTECTED VM with one vCPU, a
guest_memfd (MMAP, optionally INIT_SHARED) bound at GPA 4 GiB whose mmap is
also the memslot's userspace mapping, and `mem`, the host mapping of it.
Host accesses run in forked children (a private page SIGBUSes), so a kernel
that lets the host touch private memory fails the check instead of killing
pytest.
"""

from kvm import api, child, uapi
from kvm.guest import DATA_GPA, MiniGuest
from kvm.libc import Mapping
from kvm.probe import Features

PAGE = uapi.PAGE_SIZE
PRIVATE = uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE


def content_mode(features: Features) -> int:
    """PRESERVE where the revision has content modes (v3 selftests' global), else 0 (v6+)."""
    if features.content_mode("preserve", "to_shared") and features.content_mode(
        "preserve", "to_private"
    ):
        return uapi.KVM_SET_MEMORY_ATTRIBUTES2_PRESERVE
    return 0


class ConversionEnv:
    def __init__(
        self, features: Features, nr_pages: int, init_shared: bool, with_guest: bool = True
    ) -> None:
        self.nr_pages = nr_pages
        self.size = nr_pages * PAGE
        self.mode = content_mode(features)
        # v3/v4 SW_PROTECTED: a conversion with flags 0 fills pages with random bytes.
        self.scrambles = self.mode == 0 and features.any_content_mode
        self.vm = api.Vm(uapi.KVM_X86_SW_PROTECTED_VM)
        flags = uapi.GUEST_MEMFD_FLAG_MMAP
        if init_shared:
            flags |= uapi.GUEST_MEMFD_FLAG_INIT_SHARED
        self.gmem_fd = self.vm.create_guest_memfd(self.size, flags)
        self.mem = Mapping(self.size, fd=self.gmem_fd)
        self.guest: MiniGuest | None = None
        if with_guest:
            self.guest = MiniGuest(self.vm)
            self.vm.set_region(
                1, DATA_GPA, self.size, userspace_addr=self.mem.addr, guest_memfd=self.gmem_fd
            )

    def close(self) -> None:
        """Tear down (idempotent: multipage tests close each VM before the fixture does)."""
        if self.guest is not None:
            self.guest.close()
            self.guest = None
        self.mem.unmap()
        self.vm.close()

    # --- host side ----------------------------------------------------------------
    def host_do_rmw(self, page: int, expect: int, write: int | None) -> None:
        mem, off = self.mem, page * PAGE

        def body() -> None:
            got = mem.read_byte(off)
            assert got == expect & 0xFF, (
                f"host read {got:#x} in page {page}, expected {expect & 0xFF:#x}"
            )
            if write is not None:
                mem.write_byte(off, write)

        child.expect_ok(f"host rmw of page {page}", body)

    def host_read(self, page: int, expect: int) -> None:
        self.host_do_rmw(page, expect, None)

    def host_expect_sigbus(self, page: int) -> None:
        mem, off = self.mem, page * PAGE
        child.expect_sigbus(f"host write to private page {page}", lambda: mem.write_byte(off, 0x5A))
        child.expect_sigbus(
            f"host read of private page {page}", lambda: mem.read_byte(off) and None
        )

    # --- guest side ------------------------------------------------------------------
    def guest_do_rmw(self, page: int, expect: int, write: int) -> None:
        assert self.guest is not None, "this environment has no vCPU"
        self.guest.rmw(DATA_GPA + page * PAGE, expect, write)

    # --- the C test's steps -------------------------------------------------------------
    def test_private(self, page: int, start: int, write: int) -> None:
        mem, off = self.mem, page * PAGE
        child.expect_sigbus(
            f"host write to private page {page}", lambda: mem.write_byte(off, write)
        )
        self.guest_do_rmw(page, start, write)
        child.expect_sigbus(
            f"host read of private page {page}", lambda: mem.read_byte(off) and None
        )

    def test_shared(self, page: int, start: int, host_write: int, write: int) -> None:
        self.host_do_rmw(page, start, host_write)
        self.guest_do_rmw(page, host_write, write)
        self.host_read(page, write)

    def set_attributes(self, offset: int, size: int, attributes: int) -> None:
        api.gmem_set_attributes(self.gmem_fd, offset, size, attributes, self.mode)

    def convert_to_private(self, page: int, start: int, write: int) -> None:
        self.set_attributes(page * PAGE, PAGE, PRIVATE)
        self.test_private(page, start, write)

    def convert_to_shared(self, page: int, start: int, host_write: int, write: int) -> None:
        self.set_attributes(page * PAGE, PAGE, 0)
        self.test_shared(page, start, host_write, write)

    def expect_conversion_failure(self, offset: int, size: int, attributes: int, err: int) -> int:
        """The C failure helper: -1 with `err`; returns the error_offset written back."""
        arg = api.attrs2(offset, size, attributes, self.mode)
        try:
            api.set_memory_attributes2(self.gmem_fd, arg)
        except OSError as exc:
            assert exc.errno == err, f"conversion of [{offset:#x}, +{size:#x}): {exc}"
            return int(arg.error_offset)
        raise AssertionError(
            f"conversion of [{offset:#x}, +{size:#x}) succeeded, expected errno {err}"
        )
