"""Host-side checks of the guest suite's uapi bindings (no /dev/kvm needed).

Every ioctl number is recomputed from _IOC and compared with the value in
SERIES.md / include/uapi/linux/kvm.h: a wrong size or direction would make the
suite's ioctls fail with ENOTTY and silently turn tests into skips.
"""

import ctypes
import json

import pytest

from tests.unit import guestmods

uapi = guestmods.load("kvm.uapi")
ioc = guestmods.load("kvm.ioc")
guest = guestmods.load("kvm.guest")
probe = guestmods.load("kvm.probe")

# Values from SERIES.md §1.1/§9 and the 7.3 uapi headers (x86_64).
EXPECTED_IOCTLS = {
    "KVM_GET_API_VERSION": 0xAE00,
    "KVM_CREATE_VM": 0xAE01,
    "KVM_CHECK_EXTENSION": 0xAE03,
    "KVM_GET_VCPU_MMAP_SIZE": 0xAE04,
    "KVM_GET_SUPPORTED_CPUID": 0xC008AE05,
    "KVM_CREATE_VCPU": 0xAE41,
    "KVM_SET_USER_MEMORY_REGION2": 0x40A0AE49,
    "KVM_SET_MEMORY_ATTRIBUTES": 0x4020AED2,
    "KVM_SET_MEMORY_ATTRIBUTES2": 0xC080AED2,
    "KVM_CREATE_GUEST_MEMFD": 0xC040AED4,
    "KVM_RUN": 0xAE80,
    "KVM_GET_REGS": 0x8090AE81,
    "KVM_SET_REGS": 0x4090AE82,
    "KVM_GET_SREGS": 0x8138AE83,
    "KVM_SET_SREGS": 0x4138AE84,
    "KVM_SET_CPUID2": 0x4008AE90,
    "PIN_LONGTERM_TEST_START": 0x40186707,
    "PIN_LONGTERM_TEST_STOP": 0x6708,
}


@pytest.mark.parametrize(("name", "value"), sorted(EXPECTED_IOCTLS.items()))
def test_ioctl_numbers(name: str, value: int) -> None:
    assert getattr(uapi, name) == value, f"{name} = {getattr(uapi, name):#x}, want {value:#x}"


def test_attributes2_differs_from_attributes_only_in_dir_and_size() -> None:
    d1, t1, n1, s1 = ioc.decode(uapi.KVM_SET_MEMORY_ATTRIBUTES)
    d2, t2, n2, s2 = ioc.decode(uapi.KVM_SET_MEMORY_ATTRIBUTES2)
    assert (t1, n1) == (t2, n2) == (0xAE, 0xD2)
    assert (d1, s1) == (ioc.IOC_WRITE, 32)
    assert (d2, s2) == (ioc.IOC_READ | ioc.IOC_WRITE, 128)


def test_ioc_rejects_oversized_struct() -> None:
    with pytest.raises(ValueError):
        ioc.iow(0xAE, 1, 1 << 14)


# struct -> (its size, the offsets of the fields that matter), from the uapi headers.
LAYOUTS: dict[str, tuple[int, dict[str, int]]] = {
    "KvmCreateGuestMemfd": (64, {"reserved": 16}),
    "KvmUserspaceMemoryRegion2": (160, {"guest_memfd_offset": 32, "guest_memfd": 40, "pad2": 48}),
    "KvmMemoryAttributes": (32, {}),
    "KvmMemoryAttributes2": (
        128,
        {"offset": 0, "size": 8, "attributes": 16, "flags": 24, "error_offset": 32, "reserved": 40},
    ),
    "KvmRegs": (144, {"rip": 128}),
    "KvmSegment": (24, {}),
    "KvmDtable": (16, {}),
    "KvmSregs": (312, {"tr": 144, "gdt": 192, "cr0": 224, "efer": 264, "interrupt_bitmap": 280}),
    "KvmCpuidEntry2": (40, {}),
    "KvmCpuid2Header": (8, {}),
    "KvmRunIo": (16, {"data_offset": 8}),
    "KvmRunMemoryFault": (24, {}),
    "PinLongtermTest": (24, {}),
}
SIZES = sorted((struct, size) for struct, (size, _) in LAYOUTS.items())
OFFSETS = [(struct, f, at) for struct, (_, fields) in LAYOUTS.items() for f, at in fields.items()]


@pytest.mark.parametrize(("name", "size"), SIZES)
def test_struct_sizes(name: str, size: int) -> None:
    assert ctypes.sizeof(getattr(uapi, name)) == size


@pytest.mark.parametrize(("struct", "field", "offset"), OFFSETS)
def test_field_offsets(struct: str, field: str, offset: int) -> None:
    assert getattr(getattr(uapi, struct), field).offset == offset


def test_first_32_bytes_match_kvm_memory_attributes() -> None:
    # The series BUILD_BUG_ONs this equivalence.
    for name in ("size", "attributes", "flags"):
        assert (
            getattr(uapi.KvmMemoryAttributes2, name).offset
            == getattr(uapi.KvmMemoryAttributes, name).offset
        )


def test_constants() -> None:
    assert uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE == 0x8
    assert uapi.GUEST_MEMFD_FLAG_MMAP == 1
    assert uapi.GUEST_MEMFD_FLAG_INIT_SHARED == 2
    assert uapi.KVM_MEM_GUEST_MEMFD == 4
    assert uapi.KVM_EXIT_MEMORY_FAULT == 39
    assert uapi.KVM_EXIT_IO == 2
    assert uapi.KVM_X86_SW_PROTECTED_VM == 1
    assert uapi.KVM_CAP_VM_TYPES == 235
    assert uapi.KVM_CAP_GUEST_MEMFD_FLAGS == 244
    assert (uapi.KVM_SET_MEMORY_ATTRIBUTES2_ZERO, uapi.KVM_SET_MEMORY_ATTRIBUTES2_PRESERVE) == (
        1,
        2,
    )


def test_no_series_capability_numbers() -> None:
    # The series' cap numbers moved every revision: the bindings must not carry them.
    names = [n for n in dir(uapi) if n.startswith("KVM_CAP_")]
    assert not [n for n in names if "ATTRIBUTES2" in n or "GUEST_MEMFD_MEMORY" in n]


def test_guest_program_layout() -> None:
    # The jz skips exactly the 3-byte store; the closing jmp targets the hlt.
    prog = guest.PROGRAM
    assert prog[8:10] == bytes([0x74, 0x03]) and prog[10:13] == bytes([0x40, 0x88, 0x37])
    assert prog[0x0F] == 0xF4 and prog[0x10:0x12] == bytes([0xEB, 0xFD])
    scan = guest.SCAN_PROGRAM
    assert scan[0x1C] == 0xF4 and scan[0x1D:0x1F] == bytes([0xEB, 0xFD])
    assert len(prog) <= guest.SCAN_OFFSET


def test_probe_json_round_trip() -> None:
    feats = probe.Features(kvm=True, vm_types=[0, 1], attrs2_gmem=True)
    feats.content_modes = {"zero": {"to_shared": True, "to_private": False}}
    data = json.loads(feats.to_json())
    assert data["sw_protected"] is True
    assert data["per_gmem_attributes"] is True
    assert feats.content_mode("zero", "to_shared")
    assert not feats.content_mode("zero", "to_private")
    assert not feats.content_mode("preserve", "to_shared")
    summary = feats.summary()
    assert summary["vm_types"] == "[0, 1]" and summary["kernel"] == ""


def test_probe_without_kvm(monkeypatch: pytest.MonkeyPatch) -> None:
    api = guestmods.load("kvm.api")
    monkeypatch.setattr(api, "DEV_KVM", "/nonexistent/kvm")
    feats = probe.probe(run_vcpus=False)
    assert not feats.kvm and "/nonexistent/kvm" in feats.kvm_error
    assert not feats.attrs2_gmem


def test_ioctl_struct_keeps_write_back_when_the_ioctl_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # KVM_SET_MEMORY_ATTRIBUTES2 writes error_offset back and returns -EAGAIN; fcntl.ioctl
    # has copied the kernel's buffer into ours by the time it raises.
    api = guestmods.load("kvm.api")

    def fake_ioctl(fd: int, request: int, buf: bytearray, mutate: bool) -> int:
        assert mutate and isinstance(buf, bytearray)
        buf[32:40] = (0x3000).to_bytes(8, "little")
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(api.fcntl, "ioctl", fake_ioctl)
    arg = api.attrs2(0, 4 * 4096, uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE)
    with pytest.raises(OSError) as info:
        api.set_memory_attributes2(3, arg)
    assert info.value.errno == 11
    assert arg.error_offset == 0x3000
    assert arg.size == 4 * 4096  # the rest of the struct is the buffer's too


def test_gmem_set_attributes_attaches_the_written_back_struct(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api = guestmods.load("kvm.api")

    def fake_ioctl(fd: int, request: int, buf: bytearray, mutate: bool) -> int:
        buf[32:40] = (0x2000).to_bytes(8, "little")
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(api.fcntl, "ioctl", fake_ioctl)
    with pytest.raises(OSError) as info:
        api.gmem_set_attributes(3, 0, 4 * 4096, uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE)
    assert info.value.attrs.error_offset == 0x2000  # type: ignore[attr-defined]


def test_probe_json_carries_the_v8_probes() -> None:
    feats = probe.Features(gmem_attributes_cap=250, gmem_attributes_cap_candidates=[250])
    feats.error_offset_input = "ignored"
    data = json.loads(feats.to_json())
    assert data["gmem_attributes_cap"] == 250
    assert data["error_offset_input"] == "ignored"
    assert feats.summary()["gmem_attributes_cap_candidates"] == "[250]"
