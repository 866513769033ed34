"""KVM uapi constants, struct layouts and ioctl numbers (x86_64).

Sources: include/uapi/linux/kvm.h and arch/x86/include/uapi/asm/kvm.h of Linux
7.3, plus the guest_memfd in-place conversion series as summarised in
shared/SERIES.md. Struct layouts are ctypes structures whose sizes the unit
tests pin; ioctl numbers are derived from them with the _IOC encoding.
"""

import ctypes

from .ioc import io, ior, iow, iowr

KVMIO = 0xAE
PAGE_SIZE = 4096

# --- capabilities that are in mainline (stable numbers) -------------------
KVM_CAP_USER_MEMORY2 = 231
KVM_CAP_MEMORY_ATTRIBUTES = 233
KVM_CAP_GUEST_MEMFD = 234
KVM_CAP_VM_TYPES = 235
KVM_CAP_GUEST_MEMFD_FLAGS = 244
# The series' own capabilities (KVM_CAP_MEMORY_ATTRIBUTES2,
# KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES, ..._FLAGS) changed number in nearly
# every revision and collide with mainline s390/ppc/arm caps, so they are
# deliberately absent: features are probed instead (see probe.py).

# --- VM types (x86) ---------------------------------------------------------
KVM_X86_DEFAULT_VM = 0
KVM_X86_SW_PROTECTED_VM = 1
KVM_X86_SEV_VM = 2
KVM_X86_SEV_ES_VM = 3
KVM_X86_SNP_VM = 4
KVM_X86_TDX_VM = 5
VM_TYPE_NAMES = {
    KVM_X86_DEFAULT_VM: "default",
    KVM_X86_SW_PROTECTED_VM: "sw_protected",
    KVM_X86_SEV_VM: "sev",
    KVM_X86_SEV_ES_VM: "sev_es",
    KVM_X86_SNP_VM: "snp",
    KVM_X86_TDX_VM: "tdx",
}

# --- guest_memfd / memslots / attributes -------------------------------------
GUEST_MEMFD_FLAG_MMAP = 1 << 0
GUEST_MEMFD_FLAG_INIT_SHARED = 1 << 1

KVM_MEM_LOG_DIRTY_PAGES = 1 << 0
KVM_MEM_READONLY = 1 << 1
KVM_MEM_GUEST_MEMFD = 1 << 2

KVM_MEMORY_ATTRIBUTE_PRIVATE = 1 << 3

# Content modes of KVM_SET_MEMORY_ATTRIBUTES2 (RFC v3..v5 only; gone in v6+).
KVM_SET_MEMORY_ATTRIBUTES2_MODE_UNSPECIFIED = 0
KVM_SET_MEMORY_ATTRIBUTES2_ZERO = 1 << 0
KVM_SET_MEMORY_ATTRIBUTES2_PRESERVE = 1 << 1

# --- exit reasons -------------------------------------------------------------
KVM_EXIT_UNKNOWN = 0
KVM_EXIT_IO = 2
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTERNAL_ERROR = 17
KVM_EXIT_MEMORY_FAULT = 39
KVM_EXIT_IO_IN = 0
KVM_EXIT_IO_OUT = 1
KVM_MEMORY_EXIT_FLAG_PRIVATE = 1 << 3

# --- structs ----------------------------------------------------------------------
u8 = ctypes.c_uint8
u16 = ctypes.c_uint16
u32 = ctypes.c_uint32
u64 = ctypes.c_uint64
Fields = tuple[tuple[str, type], ...]


def each(ctype: type, *names: str) -> Fields:
    """Fields of one type, as C declares them in one line (`__u64 cr0, cr2, cr3;`)."""
    return tuple((name, ctype) for name in names)


class KvmCreateGuestMemfd(ctypes.Structure):
    _fields_ = (("size", u64), ("flags", u64), ("reserved", u64 * 6))


class KvmUserspaceMemoryRegion2(ctypes.Structure):
    _fields_ = (
        ("slot", u32),
        ("flags", u32),
        ("guest_phys_addr", u64),
        ("memory_size", u64),
        ("userspace_addr", u64),
        ("guest_memfd_offset", u64),
        ("guest_memfd", u32),
        ("pad1", u32),
        ("pad2", u64 * 14),
    )


class KvmMemoryAttributes(ctypes.Structure):
    """The per-VM KVM_SET_MEMORY_ATTRIBUTES argument (mainline)."""

    _fields_ = (("address", u64), ("size", u64), ("attributes", u64), ("flags", u64))


class KvmMemoryAttributes2(ctypes.Structure):
    """KVM_SET_MEMORY_ATTRIBUTES2 (RFC v2..v8): 128 bytes, error_offset at 32.

    Field 0 is a union: a GPA (`address`) on the VM fd, a file offset
    (`offset`) on a guest_memfd; one field serves both here.
    """

    _fields_ = (
        ("offset", u64),
        ("size", u64),
        ("attributes", u64),
        ("flags", u64),
        ("error_offset", u64),
        ("reserved", u64 * 11),
    )


KVM_REGS_NAMES = (
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
    "rip", "rflags",
)  # fmt: skip


class KvmRegs(ctypes.Structure):
    _fields_ = each(u64, *KVM_REGS_NAMES)


class KvmSegment(ctypes.Structure):
    _fields_ = (
        ("base", u64),
        ("limit", u32),
        ("selector", u16),
        *each(u8, "type", "present", "dpl", "db", "s", "l", "g", "avl", "unusable", "padding"),
    )


class KvmDtable(ctypes.Structure):
    _fields_ = (("base", u64), ("limit", u16), ("padding", u16 * 3))


KVM_NR_INTERRUPTS = 256


class KvmSregs(ctypes.Structure):
    _fields_ = (
        *each(KvmSegment, "cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt"),
        *each(KvmDtable, "gdt", "idt"),
        *each(u64, "cr0", "cr2", "cr3", "cr4", "cr8", "efer", "apic_base"),
        ("interrupt_bitmap", u64 * ((KVM_NR_INTERRUPTS + 63) // 64)),
    )


class KvmCpuidEntry2(ctypes.Structure):
    _fields_ = (
        *each(u32, "function", "index", "flags", "eax", "ebx", "ecx", "edx"),
        ("padding", u32 * 3),
    )


class KvmCpuid2Header(ctypes.Structure):
    """struct kvm_cpuid2 without its flexible entries[] array (what _IOC sizes)."""

    _fields_ = (("nent", u32), ("padding", u32))


# struct kvm_run: only the parts the suite reads. Offsets are from the uapi
# header: 8 bytes of inputs, then exit_reason at 8, then the exit union at 32.
KVM_RUN_EXIT_REASON_OFFSET = 8
KVM_RUN_EXIT_UNION_OFFSET = 32


class KvmRunIo(ctypes.Structure):
    _fields_ = (
        ("direction", u8),
        ("size", u8),
        ("port", u16),
        ("count", u32),
        ("data_offset", u64),
    )


class KvmRunMmio(ctypes.Structure):
    _fields_ = (("phys_addr", u64), ("data", u8 * 8), ("len", u32), ("is_write", u8))


class KvmRunMemoryFault(ctypes.Structure):
    _fields_ = (("flags", u64), ("gpa", u64), ("size", u64))


class KvmRunFailEntry(ctypes.Structure):
    _fields_ = (("hardware_entry_failure_reason", u64), ("cpu", u32))


class KvmRunInternal(ctypes.Structure):
    _fields_ = (("suberror", u32), ("ndata", u32), ("data", u64 * 16))


# --- ioctl numbers ------------------------------------------------------------------
# system ioctls (/dev/kvm)
KVM_GET_API_VERSION = io(KVMIO, 0x00)
KVM_CREATE_VM = io(KVMIO, 0x01)
KVM_CHECK_EXTENSION = io(KVMIO, 0x03)
KVM_GET_VCPU_MMAP_SIZE = io(KVMIO, 0x04)
KVM_GET_SUPPORTED_CPUID = iowr(KVMIO, 0x05, ctypes.sizeof(KvmCpuid2Header))
# VM ioctls
KVM_CREATE_VCPU = io(KVMIO, 0x41)
KVM_SET_USER_MEMORY_REGION2 = iow(KVMIO, 0x49, ctypes.sizeof(KvmUserspaceMemoryRegion2))
KVM_SET_MEMORY_ATTRIBUTES = iow(KVMIO, 0xD2, ctypes.sizeof(KvmMemoryAttributes))
KVM_CREATE_GUEST_MEMFD = iowr(KVMIO, 0xD4, ctypes.sizeof(KvmCreateGuestMemfd))
# The series: same nr as KVM_SET_MEMORY_ATTRIBUTES, different dir/size (RFC v2+).
KVM_SET_MEMORY_ATTRIBUTES2 = iowr(KVMIO, 0xD2, ctypes.sizeof(KvmMemoryAttributes2))
# vCPU ioctls
KVM_RUN = io(KVMIO, 0x80)
KVM_GET_REGS = ior(KVMIO, 0x81, ctypes.sizeof(KvmRegs))
KVM_SET_REGS = iow(KVMIO, 0x82, ctypes.sizeof(KvmRegs))
KVM_GET_SREGS = ior(KVMIO, 0x83, ctypes.sizeof(KvmSregs))
KVM_SET_SREGS = iow(KVMIO, 0x84, ctypes.sizeof(KvmSregs))
KVM_SET_CPUID2 = iow(KVMIO, 0x90, ctypes.sizeof(KvmCpuid2Header))

# --- mm/gup_test.h (CONFIG_GUP_TEST, debugfs gup_test) ----------------------------


class PinLongtermTest(ctypes.Structure):
    _fields_ = (("addr", u64), ("size", u64), ("flags", u32))


GUP_TEST_TYPE = ord("g")
PIN_LONGTERM_TEST_START = iow(GUP_TEST_TYPE, 7, ctypes.sizeof(PinLongtermTest))
PIN_LONGTERM_TEST_STOP = io(GUP_TEST_TYPE, 8)
PIN_LONGTERM_TEST_FLAG_USE_WRITE = 1
GUP_TEST_PATH = "/sys/kernel/debug/gup_test"
