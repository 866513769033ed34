"""One vCPU: creation, the mmap'ed struct kvm_run, registers, CPUID, KVM_RUN."""

import ctypes
import errno
import fcntl
import mmap
from dataclasses import dataclass

from . import api, uapi

KVM_RUN_IMMEDIATE_EXIT_OFFSET = 1


@dataclass(frozen=True)
class Exit:
    """What one KVM_RUN returned, decoded from struct kvm_run."""

    reason: int
    # KVM_EXIT_IO
    io_port: int = 0
    io_direction: int = 0
    io_size: int = 0
    io_data: bytes = b""
    # KVM_EXIT_MMIO
    mmio_addr: int = 0
    mmio_len: int = 0
    mmio_is_write: bool = False
    # KVM_EXIT_MEMORY_FAULT
    fault_flags: int = 0
    fault_gpa: int = 0
    fault_size: int = 0
    # KVM_EXIT_FAIL_ENTRY / INTERNAL_ERROR details, for messages
    detail: str = ""

    def describe(self) -> str:
        names = {
            uapi.KVM_EXIT_IO: "IO",
            uapi.KVM_EXIT_HLT: "HLT",
            uapi.KVM_EXIT_MMIO: "MMIO",
            uapi.KVM_EXIT_SHUTDOWN: "SHUTDOWN",
            uapi.KVM_EXIT_FAIL_ENTRY: "FAIL_ENTRY",
            uapi.KVM_EXIT_INTERNAL_ERROR: "INTERNAL_ERROR",
            uapi.KVM_EXIT_MEMORY_FAULT: "MEMORY_FAULT",
        }
        text = f"exit {names.get(self.reason, str(self.reason))}"
        if self.reason == uapi.KVM_EXIT_IO:
            text += f" port={self.io_port:#x} data={self.io_data.hex()}"
        elif self.reason == uapi.KVM_EXIT_MMIO:
            text += f" gpa={self.mmio_addr:#x} len={self.mmio_len} write={self.mmio_is_write}"
        elif self.reason == uapi.KVM_EXIT_MEMORY_FAULT:
            text += (
                f" gpa={self.fault_gpa:#x} size={self.fault_size:#x} flags={self.fault_flags:#x}"
            )
        if self.detail:
            text += f" ({self.detail})"
        return text


class Vcpu:
    def __init__(self, vm: api.Vm, vcpu_id: int = 0) -> None:
        self.fd = api.ioctl_int(vm.fd, uapi.KVM_CREATE_VCPU, vcpu_id)
        size = api.get_vcpu_mmap_size(vm.kvm_fd)
        self.run_map = mmap.mmap(self.fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)

    # --- registers -----------------------------------------------------------
    def set_regs(self, regs: uapi.KvmRegs) -> None:
        api.ioctl_struct(self.fd, uapi.KVM_SET_REGS, regs)

    def get_sregs(self) -> uapi.KvmSregs:
        sregs = uapi.KvmSregs()
        api.ioctl_struct(self.fd, uapi.KVM_GET_SREGS, sregs)
        return sregs

    def set_sregs(self, sregs: uapi.KvmSregs) -> None:
        api.ioctl_struct(self.fd, uapi.KVM_SET_SREGS, sregs)

    def set_supported_cpuid(self, kvm_fd: int) -> None:
        """Give the vCPU everything KVM supports (long mode, PAE, ...), like the selftests."""
        nent = 128
        while True:
            entry_size = ctypes.sizeof(uapi.KvmCpuidEntry2)
            header = uapi.KvmCpuid2Header(nent=nent)
            buf = bytearray(bytes(header)) + bytearray(nent * entry_size)
            try:
                fcntl.ioctl(kvm_fd, uapi.KVM_GET_SUPPORTED_CPUID, buf, True)
                break
            except OSError as exc:
                if exc.errno != errno.E2BIG or nent >= 4096:
                    raise
                nent *= 2
        fcntl.ioctl(self.fd, uapi.KVM_SET_CPUID2, buf, True)

    # --- running ---------------------------------------------------------------
    def settle(self) -> None:
        """Complete any half-done exit (pending MMIO/PIO) without entering the guest.

        KVM finishes a pending userspace I/O on the next KVM_RUN; with
        immediate_exit set that KVM_RUN then returns EINTR at once. Without
        this, setting RIP after an unexpected MMIO exit would let the stale
        completion clobber the next access.
        """
        self.run_map[KVM_RUN_IMMEDIATE_EXIT_OFFSET] = 1
        try:
            fcntl.ioctl(self.fd, uapi.KVM_RUN, 0)
        except InterruptedError:
            pass
        except OSError as exc:
            # A memory-fault exit has nothing pending; EFAULT here is a stale report.
            if exc.errno != errno.EFAULT:
                raise
        finally:
            self.run_map[KVM_RUN_IMMEDIATE_EXIT_OFFSET] = 0

    def run(self) -> Exit:
        """KVM_RUN once. EFAULT with exit_reason MEMORY_FAULT is an exit, not an error."""
        try:
            fcntl.ioctl(self.fd, uapi.KVM_RUN, 0)
        except OSError as exc:
            if exc.errno == errno.EFAULT and self._reason() == uapi.KVM_EXIT_MEMORY_FAULT:
                return self._decode()
            raise
        return self._decode()

    def _reason(self) -> int:
        return int.from_bytes(
            self.run_map[uapi.KVM_RUN_EXIT_REASON_OFFSET : uapi.KVM_RUN_EXIT_REASON_OFFSET + 4],
            "little",
        )

    def _union(self, cls: type[api.S]) -> api.S:
        off = uapi.KVM_RUN_EXIT_UNION_OFFSET
        return cls.from_buffer_copy(self.run_map[off : off + ctypes.sizeof(cls)])

    def _decode(self) -> Exit:
        reason = self._reason()
        if reason == uapi.KVM_EXIT_IO:
            io = self._union(uapi.KvmRunIo)
            start = io.data_offset
            data = bytes(self.run_map[start : start + io.size * io.count])
            return Exit(
                reason, io_port=io.port, io_direction=io.direction, io_size=io.size, io_data=data
            )
        if reason == uapi.KVM_EXIT_MMIO:
            mmio = self._union(uapi.KvmRunMmio)
            return Exit(
                reason,
                mmio_addr=mmio.phys_addr,
                mmio_len=mmio.len,
                mmio_is_write=bool(mmio.is_write),
            )
        if reason == uapi.KVM_EXIT_MEMORY_FAULT:
            mf = self._union(uapi.KvmRunMemoryFault)
            return Exit(reason, fault_flags=mf.flags, fault_gpa=mf.gpa, fault_size=mf.size)
        if reason == uapi.KVM_EXIT_FAIL_ENTRY:
            fe = self._union(uapi.KvmRunFailEntry)
            return Exit(reason, detail=f"hw reason {fe.hardware_entry_failure_reason:#x}")
        if reason == uapi.KVM_EXIT_INTERNAL_ERROR:
            ie = self._union(uapi.KvmRunInternal)
            return Exit(reason, detail=f"suberror {ie.suberror}")
        return Exit(reason)

    def close(self) -> None:
        self.run_map.close()
        api.close_quietly(self.fd)
