"""Thin wrappers over the KVM ioctls: one call each, OSError(errno) on failure.

fcntl.ioctl with a bytearray and mutate_flag=True returns the syscall's return
value (e.g. the new guest_memfd fd) and copies out-fields back into the buffer
(e.g. error_offset), which is why every struct travels as a bytearray.
"""

import contextlib
import ctypes
import fcntl
import os
from typing import TypeVar

from . import uapi

S = TypeVar("S", bound=ctypes.Structure)

# Overridable so the no-KVM path can be exercised on a machine that has KVM.
DEV_KVM = os.environ.get("GMEMLAB_DEV_KVM", "/dev/kvm")


def ioctl_struct(fd: int, request: int, obj: ctypes.Structure) -> int:
    """Issue an ioctl on a struct, copying kernel write-backs into `obj`.

    Also when the ioctl fails: KVM_SET_MEMORY_ATTRIBUTES2 writes error_offset
    back and then returns -EAGAIN. fcntl.ioctl copies the kernel's view of the
    buffer back into `buf` before it raises OSError, so the write-back is read
    from `buf` on both paths (reading it only after a successful return made
    error_offset look like 0 after every EAGAIN).
    """
    buf = bytearray(bytes(obj))
    try:
        ret = fcntl.ioctl(fd, request, buf, True)
    finally:
        ctypes.memmove(ctypes.addressof(obj), bytes(buf), len(buf))
    return int(ret)


def ioctl_int(fd: int, request: int, arg: int = 0) -> int:
    return int(fcntl.ioctl(fd, request, arg))


def open_kvm() -> int:
    return os.open(DEV_KVM, os.O_RDWR | os.O_CLOEXEC)


def check_extension(fd: int, cap: int) -> int:
    """KVM_CHECK_EXTENSION on /dev/kvm or a VM fd; 0 means unsupported."""
    return ioctl_int(fd, uapi.KVM_CHECK_EXTENSION, cap)


def create_vm_fd(kvm_fd: int, vm_type: int = uapi.KVM_X86_DEFAULT_VM) -> int:
    return ioctl_int(kvm_fd, uapi.KVM_CREATE_VM, vm_type)


def create_guest_memfd(
    vm_fd: int, size: int, flags: int = 0, reserved: tuple[int, ...] = ()
) -> int:
    arg = uapi.KvmCreateGuestMemfd(size=size & 0xFFFFFFFFFFFFFFFF, flags=flags)
    for i, value in enumerate(reserved):
        arg.reserved[i] = value
    return ioctl_struct(vm_fd, uapi.KVM_CREATE_GUEST_MEMFD, arg)


def set_user_memory_region2(
    vm_fd: int,
    slot: int,
    flags: int,
    gpa: int,
    size: int,
    userspace_addr: int = 0,
    guest_memfd: int = 0,
    guest_memfd_offset: int = 0,
) -> None:
    region = uapi.KvmUserspaceMemoryRegion2(
        slot=slot,
        flags=flags,
        guest_phys_addr=gpa,
        memory_size=size,
        userspace_addr=userspace_addr,
        guest_memfd_offset=guest_memfd_offset & 0xFFFFFFFFFFFFFFFF,
        guest_memfd=guest_memfd & 0xFFFFFFFF,
    )
    ioctl_struct(vm_fd, uapi.KVM_SET_USER_MEMORY_REGION2, region)


def delete_memslot(vm_fd: int, slot: int) -> None:
    set_user_memory_region2(vm_fd, slot, 0, 0, 0)


def set_memory_attributes(vm_fd: int, gpa: int, size: int, attributes: int, flags: int = 0) -> None:
    """The mainline per-VM KVM_SET_MEMORY_ATTRIBUTES (VM fd)."""
    arg = uapi.KvmMemoryAttributes(address=gpa, size=size, attributes=attributes, flags=flags)
    ioctl_struct(vm_fd, uapi.KVM_SET_MEMORY_ATTRIBUTES, arg)


def set_memory_attributes2(fd: int, arg: uapi.KvmMemoryAttributes2) -> int:
    """KVM_SET_MEMORY_ATTRIBUTES2 on a guest_memfd or VM fd.

    `arg` is updated in place with whatever the kernel copied back (the series
    writes the whole struct back, error_offset included, on failure).
    """
    return ioctl_struct(fd, uapi.KVM_SET_MEMORY_ATTRIBUTES2, arg)


def attrs2(
    offset: int,
    size: int,
    attributes: int,
    flags: int = 0,
    error_offset: int = 0,
    reserved: dict[int, int] | None = None,
) -> uapi.KvmMemoryAttributes2:
    arg = uapi.KvmMemoryAttributes2(
        offset=offset & 0xFFFFFFFFFFFFFFFF,
        size=size & 0xFFFFFFFFFFFFFFFF,
        attributes=attributes,
        flags=flags,
        error_offset=error_offset & 0xFFFFFFFFFFFFFFFF,
    )
    for i, value in (reserved or {}).items():
        arg.reserved[i] = value
    return arg


def gmem_set_attributes(
    gmem_fd: int, offset: int, size: int, attributes: int, flags: int = 0
) -> uapi.KvmMemoryAttributes2:
    """Convert [offset, offset+size) of a guest_memfd; OSError on failure.

    The OSError carries the struct (with error_offset) as `.attrs`.
    """
    arg = attrs2(offset, size, attributes, flags)
    try:
        set_memory_attributes2(gmem_fd, arg)
    except OSError as exc:
        exc.attrs = arg  # type: ignore[attr-defined]
        raise
    return arg


def gmem_set_private(gmem_fd: int, offset: int, size: int, flags: int = 0) -> None:
    gmem_set_attributes(gmem_fd, offset, size, uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE, flags)


def gmem_set_shared(gmem_fd: int, offset: int, size: int, flags: int = 0) -> None:
    gmem_set_attributes(gmem_fd, offset, size, 0, flags)


def get_vcpu_mmap_size(kvm_fd: int) -> int:
    return ioctl_int(kvm_fd, uapi.KVM_GET_VCPU_MMAP_SIZE)


def close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


class Vm:
    """A VM fd plus what it needs closed; a context manager."""

    def __init__(self, vm_type: int = uapi.KVM_X86_DEFAULT_VM) -> None:
        self.kvm_fd = open_kvm()
        try:
            self.fd = create_vm_fd(self.kvm_fd, vm_type)
        except OSError:
            os.close(self.kvm_fd)
            raise
        self.vm_type = vm_type
        self._fds: list[int] = []

    def check_extension(self, cap: int) -> int:
        return check_extension(self.fd, cap)

    def gmem_supported_flags(self) -> int:
        return self.check_extension(uapi.KVM_CAP_GUEST_MEMFD_FLAGS)

    def create_guest_memfd(self, size: int, flags: int = 0, own: bool = True) -> int:
        """Create a guest_memfd; with own=True it is closed with the VM."""
        fd = create_guest_memfd(self.fd, size, flags)
        if own:
            self._fds.append(fd)
        return fd

    def set_region(
        self,
        slot: int,
        gpa: int,
        size: int,
        userspace_addr: int = 0,
        guest_memfd: int | None = None,
        guest_memfd_offset: int = 0,
        flags: int = 0,
    ) -> None:
        if guest_memfd is not None:
            flags |= uapi.KVM_MEM_GUEST_MEMFD
        set_user_memory_region2(
            self.fd,
            slot,
            flags,
            gpa,
            size,
            userspace_addr,
            guest_memfd if guest_memfd is not None else 0,
            guest_memfd_offset,
        )

    def delete_region(self, slot: int) -> None:
        delete_memslot(self.fd, slot)

    def close(self) -> None:
        for fd in self._fds:
            close_quietly(fd)
        self._fds.clear()
        if self.fd >= 0:
            close_quietly(self.fd)
            self.fd = -1
        if self.kvm_fd >= 0:
            close_quietly(self.kvm_fd)
            self.kvm_fd = -1

    def __enter__(self) -> "Vm":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
