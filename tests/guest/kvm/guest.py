"""A minimal x86_64 guest built from Python: long mode, identity paging, one program.

The guest has a "boot" memslot at GPA 0 (plain anonymous memory) holding the
page tables and the program, and identity-maps GVA == GPA for
[0, 2 MiB) and [4 GiB, 5 GiB), the latter being where tests bind guest_memfd
(the C selftests also use GPA 4 GiB, above the low MMIO holes).

The program reads one byte at RDI, reports it through an OUT to port 0x10,
optionally stores SIL there (when RDX != 0), reports completion on port 0x11
and halts. The host drives one access per KVM_RUN sequence, so "the guest read
what the host wrote" is checked with the exact byte the guest saw.
"""

import mmap
from dataclasses import dataclass

from . import api, uapi
from .libc import Mapping
from .vcpu import Exit, Vcpu

BOOT_SLOT = 0
BOOT_SIZE = 2 << 20
PML4_GPA = 0x1000
PDPT_GPA = 0x2000
PD_LOW_GPA = 0x3000
PD_4G_GPA = 0x4000
CODE_GPA = 0x10000
SCRATCH_GPA = 0x20000  # a byte in the boot slot for self-checks
STACK_TOP = 0x1F0000
DATA_GPA = 4 << 30  # where tests put guest_memfd-backed memory

PORT_READ = 0x10
PORT_DONE = 0x11
PORT_FLAGS = 0x12
PORT_REMAINING = 0x13
RFLAGS_ZF = 1 << 6

# Page-table entry bits (PS: a 2 MiB page in a PD entry).
PTE_P, PTE_RW, PTE_PS = 1 << 0, 1 << 1, 1 << 7

# Control-register bits, one line a register.
CR0_PE, CR0_ET, CR0_NE, CR0_PG = 1 << 0, 1 << 4, 1 << 5, 1 << 31
CR4_PAE = 1 << 5
EFER_LME, EFER_LMA = 1 << 8, 1 << 10

# The guest program, hand-assembled (offsets in the left column).
PROGRAM = bytes(
    [
        0x0F, 0xB6, 0x07,  # 00: movzx eax, byte [rdi]   read the byte under test
        0xE6, PORT_READ,  # 03: out PORT_READ, al       report what was read
        0x48, 0x85, 0xD2,  # 05: test rdx, rdx          write requested?
        0x74, 0x03,  # 08: jz +3 (-> 0d)           no: skip the store
        0x40, 0x88, 0x37,  # 0a: mov [rdi], sil         store the new byte
        0xE6, PORT_DONE,  # 0d: out PORT_DONE, al       report completion
        0xF4,  # 0f: hlt                       park; the host re-arms RIP
        0xEB, 0xFD,  # 10: jmp -3 (-> 0f)          stay parked on spurious wakeups
    ]
)  # fmt: skip

# Second program, at CODE_GPA + SCAN_OFFSET: check that RCX bytes at RDI all
# equal AL, report the result, then fill them with DL (the C test's guest_code:
# assert every byte is 0xaa, then memset 0xff).
SCAN_OFFSET = 0x40
SCAN_PROGRAM = bytes(
    [
        0x48, 0x89, 0xFB,  # 00: mov rbx, rdi            save start
        0x49, 0x89, 0xC8,  # 03: mov r8, rcx             save count
        0xF3, 0xAE,  # 06: repe scasb               scan while [rdi] == al
        0x9C,  # 08: pushfq                    ZF=1: every byte matched
        0x58,  # 09: pop rax
        0xE7, PORT_FLAGS,  # 0a: out PORT_FLAGS, eax     report rflags
        0x89, 0xC8,  # 0c: mov eax, ecx              bytes left unscanned
        0xE7, PORT_REMAINING,  # 0e: out PORT_REMAINING, eax
        0x48, 0x89, 0xDF,  # 10: mov rdi, rbx            restore start
        0x4C, 0x89, 0xC1,  # 13: mov rcx, r8             restore count
        0x88, 0xD0,  # 16: mov al, dl                  fill byte
        0xF3, 0xAA,  # 18: rep stosb                   fill the range
        0xE6, PORT_DONE,  # 1a: out PORT_DONE, al
        0xF4,  # 1c: hlt
        0xEB, 0xFD,  # 1d: jmp -3 (-> 1c)
    ]
)  # fmt: skip


class GuestError(AssertionError):
    """The vCPU stopped with an exit the access did not expect."""

    def __init__(self, step: str, exit_: Exit) -> None:
        super().__init__(f"guest {step}: unexpected {exit_.describe()}")
        self.exit = exit_


@dataclass(frozen=True)
class Access:
    """Outcome of one guest access: the byte read, or the exit that stopped it."""

    value: int | None
    exit: Exit | None = None


class MiniGuest:
    """A VM's single vCPU running PROGRAM, with a boot memslot set up."""

    def __init__(self, vm: api.Vm) -> None:
        self.vm = vm
        self.boot = Mapping(BOOT_SIZE, flags=mmap.MAP_SHARED)
        self._write_page_tables()
        self.boot.write(CODE_GPA, PROGRAM)
        self.boot.write(CODE_GPA + SCAN_OFFSET, SCAN_PROGRAM)
        vm.set_region(BOOT_SLOT, 0, BOOT_SIZE, userspace_addr=self.boot.addr)
        self.vcpu = Vcpu(vm)
        self.vcpu.set_supported_cpuid(vm.kvm_fd)
        self._enter_long_mode()

    def _write_page_tables(self) -> None:
        def put(table: int, index: int, value: int) -> None:
            self.boot.write(table + index * 8, value.to_bytes(8, "little"))

        put(PML4_GPA, 0, PDPT_GPA | PTE_P | PTE_RW)
        put(PDPT_GPA, 0, PD_LOW_GPA | PTE_P | PTE_RW)
        put(PDPT_GPA, DATA_GPA >> 30, PD_4G_GPA | PTE_P | PTE_RW)
        put(PD_LOW_GPA, 0, 0 | PTE_P | PTE_RW | PTE_PS)
        for i in range(512):
            put(PD_4G_GPA, i, (DATA_GPA + (i << 21)) | PTE_P | PTE_RW | PTE_PS)

    def _enter_long_mode(self) -> None:
        sregs = self.vcpu.get_sregs()
        # Flat 4 GiB ring-0 segments: a 64-bit code segment (L=1, D=0) and a data one.
        flat = {"base": 0, "limit": 0xFFFFFFFF, "present": 1, "dpl": 0, "s": 1, "g": 1}
        code = uapi.KvmSegment(selector=0x8, type=0xB, db=0, l=1, **flat)
        data = uapi.KvmSegment(selector=0x10, type=0x3, db=1, l=0, **flat)
        # A busy 64-bit TSS: VMX refuses entry with an unusable TR in long mode.
        tr = uapi.KvmSegment(base=0, limit=0x67, selector=0x18, type=0xB, present=1, s=0)
        sregs.cs = code
        sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data
        sregs.tr = tr
        sregs.ldt.unusable = 1
        sregs.cr0 = CR0_PE | CR0_ET | CR0_NE | CR0_PG
        sregs.cr3 = PML4_GPA
        sregs.cr4 = CR4_PAE
        sregs.efer = EFER_LME | EFER_LMA
        self.vcpu.set_sregs(sregs)

    def _run(self) -> Exit:
        while True:
            try:
                return self.vcpu.run()
            except InterruptedError:
                continue  # a signal without a raising handler: re-enter, as the C tests do

    def access(self, gpa: int, write: int | None = None) -> Access:
        """Read the byte at `gpa` in the guest and optionally store `write` there.

        Returns the byte the guest read, or (value None) the exit that stopped
        the read, e.g. KVM_EXIT_MEMORY_FAULT. An unexpected exit after a
        successful read raises GuestError.
        """
        regs = uapi.KvmRegs(
            rip=CODE_GPA,
            rdi=gpa,
            rsi=(write or 0) & 0xFF,
            rdx=1 if write is not None else 0,
            rsp=STACK_TOP,
            rflags=0x2,
        )
        self.vcpu.settle()
        self.vcpu.set_regs(regs)
        first = self._run()
        if not self._is_out(first, PORT_READ):
            return Access(None, first)
        value = first.io_data[0]
        done = self._run()
        if not self._is_out(done, PORT_DONE):
            return Access(value, done)
        # Run to the HLT so the OUT is completed before the next set_regs.
        halt = self._run()
        if halt.reason != uapi.KVM_EXIT_HLT:
            raise GuestError("halt", halt)
        return Access(value)

    def read(self, gpa: int) -> int:
        result = self.access(gpa)
        if result.exit is not None or result.value is None:
            raise GuestError(f"read of {gpa:#x}", result.exit or Exit(uapi.KVM_EXIT_UNKNOWN))
        return result.value

    def rmw(self, gpa: int, expect: int, write: int) -> None:
        """The selftests' guest_do_rmw: assert the byte, then store a new one."""
        result = self.access(gpa, write)
        if result.value is None or result.exit is not None:
            assert result.exit is not None
            raise GuestError(f"rmw of {gpa:#x}", result.exit)
        assert result.value == expect & 0xFF, (
            f"guest read {result.value:#04x} at GPA {gpa:#x}, expected {expect & 0xFF:#04x}"
        )

    def check_and_fill(self, gpa: int, count: int, expect: int, fill: int) -> None:
        """Guest asserts `count` bytes at `gpa` equal `expect`, then fills them with `fill`."""
        self.vcpu.settle()
        self.vcpu.set_regs(
            uapi.KvmRegs(
                rip=CODE_GPA + SCAN_OFFSET,
                rdi=gpa,
                rcx=count,
                rax=expect & 0xFF,
                rdx=fill & 0xFF,
                rsp=STACK_TOP,
                rflags=0x2,
            )
        )
        flags_exit = self._run()
        if not self._is_out(flags_exit, PORT_FLAGS, 4):
            raise GuestError(f"scan of [{gpa:#x}, +{count:#x})", flags_exit)
        left_exit = self._run()
        if not self._is_out(left_exit, PORT_REMAINING, 4):
            raise GuestError("scan report", left_exit)
        rflags = int.from_bytes(flags_exit.io_data[:4], "little")
        left = int.from_bytes(left_exit.io_data[:4], "little")
        if not rflags & RFLAGS_ZF:
            raise AssertionError(
                f"Guest expected {expect & 0xFF:#x} at offset {count - left - 1:#x} "
                f"of [{gpa:#x}, +{count:#x})"
            )
        assert left == 0, f"guest scan stopped with {left} bytes left"
        done = self._run()
        if not self._is_out(done, PORT_DONE):
            raise GuestError(f"fill of [{gpa:#x}, +{count:#x})", done)
        halt = self._run()
        if halt.reason != uapi.KVM_EXIT_HLT:
            raise GuestError("halt", halt)

    @staticmethod
    def _is_out(exit_: Exit, port: int, size: int = 1) -> bool:
        return (
            exit_.reason == uapi.KVM_EXIT_IO
            and exit_.io_direction == uapi.KVM_EXIT_IO_OUT
            and exit_.io_port == port
            and exit_.io_size == size
            and len(exit_.io_data) >= size
        )

    def close(self) -> None:
        self.vcpu.close()
        self.boot.unmap()
