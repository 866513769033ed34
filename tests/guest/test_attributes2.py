"""KVM_SET_MEMORY_ATTRIBUTES2 on a guest_memfd, host side only (no vCPU needed).

SERIES.md §2.2 (validation order, error_offset, EAGAIN, no partial progress),
§2.3 (per-gmem state: unallocated ranges, hole punching, fork), §2.4/§6.3
(content modes of RFC v3..v5). Host-only twins of conversion-test cases run
even where vCPUs cannot.
"""

import ctypes
import errno
import fcntl
import os
from collections.abc import Iterator

import pytest
from convlib import PAGE, PRIVATE, ConversionEnv
from gmemsuite import (
    kernel_config,
    require_attrs2,
    require_content_modes,
    require_conversions,
    require_kvm,
)
from kvm import api, child, gup, libc, uapi
from kvm.probe import Features

N = 4
ZERO = uapi.KVM_SET_MEMORY_ATTRIBUTES2_ZERO
PRESERVE = uapi.KVM_SET_MEMORY_ATTRIBUTES2_PRESERVE


@pytest.fixture
def env(features: Features) -> Iterator[ConversionEnv]:
    """N pages, INIT_SHARED, no vCPU: all checks are made through the host mapping."""
    require_conversions(features)
    if not features.gmem_flags.get("sw_protected", 0) & uapi.GUEST_MEMFD_FLAG_INIT_SHARED:
        pytest.skip("GUEST_MEMFD_FLAG_INIT_SHARED not supported for sw_protected VMs")
    e = ConversionEnv(features, N, init_shared=True, with_guest=False)
    yield e
    e.close()


@pytest.fixture
def private_env(features: Features) -> Iterator[ConversionEnv]:
    require_conversions(features)
    e = ConversionEnv(features, N, init_shared=False, with_guest=False)
    yield e
    e.close()


def _errno(fd: int, arg: uapi.KvmMemoryAttributes2) -> int:
    try:
        api.set_memory_attributes2(fd, arg)
    except OSError as exc:
        return exc.errno or -1
    return 0


# --- probing and paths -------------------------------------------------------------------


def test_probe_size_zero_einval(features: Features) -> None:
    """The probe's premise: size 0 is rejected with EINVAL (not accepted, not ENOTTY)."""
    require_attrs2(features)
    assert features.attrs2_gmem_errno == "EINVAL", features.attrs2_gmem_errno


def test_exactly_one_attributes_path(features: Features) -> None:
    """v3/v4: gmem ioctl iff per-VM attributes are off; never both live (v5+: VM fd never)."""
    require_attrs2(features)
    assert not features.attrs2_vm, "KVM_SET_MEMORY_ATTRIBUTES2 live on both the VM fd and gmem"
    assert not features.vm_attributes.get("sw_protected", 0) & PRIVATE, (
        "per-VM PRIVATE attributes still advertised while guest_memfd attributes are live"
    )


def test_unknown_gmem_ioctl_enotty(features: Features) -> None:
    require_attrs2(features)
    with api.Vm() as vm:
        fd = vm.create_guest_memfd(PAGE)
        with pytest.raises(OSError) as info:
            api.ioctl_int(fd, uapi.KVM_SET_MEMORY_ATTRIBUTES, 0)
        assert info.value.errno == errno.ENOTTY


def test_default_vm_rejects_private(features: Features) -> None:
    """A default VM has no private memory: PRIVATE is an unsupported attribute there."""
    require_attrs2(features)
    with api.Vm() as vm:
        fd = vm.create_guest_memfd(PAGE)
        assert _errno(fd, api.attrs2(0, PAGE, PRIVATE)) == errno.EINVAL


# --- validation order (§2.2 steps 1-8) -------------------------------------------------------


def test_bad_pointer_efault(env: ConversionEnv) -> None:
    with pytest.raises(OSError) as info:
        fcntl.ioctl(env.gmem_fd, uapi.KVM_SET_MEMORY_ATTRIBUTES2, 0)
    assert info.value.errno == errno.EFAULT


INVALID = [
    pytest.param({"flags": ZERO | PRESERVE}, id="zero_and_preserve"),
    pytest.param({"flags": 1 << 5}, id="unknown_flag"),
    pytest.param({"attributes": 1 << 0}, id="attr_read"),
    pytest.param({"attributes": 1 << 4}, id="attr_bit4"),
    pytest.param({"size": 0}, id="size_zero"),
    pytest.param({"offset": PAGE, "size": (1 << 64) - PAGE}, id="size_overflow"),
    pytest.param({"offset": 1}, id="offset_unaligned"),
    pytest.param({"size": PAGE + 1}, id="size_unaligned"),
    pytest.param({"offset": N * PAGE}, id="offset_at_size"),
    pytest.param({"offset": (N - 1) * PAGE, "size": 2 * PAGE}, id="range_past_size"),
] + [pytest.param({"reserved": {i: 1}}, id=f"reserved{i}") for i in range(11)]


@pytest.mark.parametrize("bad", INVALID)
def test_invalid_request_einval_and_no_change(env: ConversionEnv, bad: dict[str, object]) -> None:
    """Each invalid field alone -> EINVAL, and nothing converts (pages stay shared).

    v8 kvm_gmem_set_attributes(): flags != 0, any reserved[i] != 0, attributes
    beyond PRIVATE, size 0 or wrapping, unaligned offset/size, and a range not
    inside i_size are all rejected before the invalidate lock is taken. (A
    nonzero input error_offset is not in this list: revision-dependent, see
    test_nonzero_input_error_offset.)
    """
    fields: dict[str, object] = {"offset": 0, "size": PAGE, "attributes": PRIVATE, "flags": 0}
    fields.update(bad)
    arg = api.attrs2(**fields)  # type: ignore[arg-type]
    env.host_do_rmw(0, 0, 0x61)
    assert _errno(env.gmem_fd, arg) == errno.EINVAL
    env.host_read(0, 0x61)  # still shared: no SIGBUS, contents intact
    # The same request without the bad field is valid: the field alone was the reason.
    ok = api.attrs2(0, PAGE, PRIVATE, env.mode)
    assert _errno(env.gmem_fd, ok) == 0


def test_nonzero_input_error_offset(env: ConversionEnv, features: Features) -> None:
    """A nonzero error_offset on input: rejected (RFC v3) or output only (v8 api.rst).

    The probe decides which from a no-op request; this checks that the kernel is
    consistent with it on a real conversion. RFC v3's kvm_gmem_set_attributes()
    returns EINVAL and converts nothing. v8's validates flags, reserved[],
    attributes, size, alignment and range but never reads error_offset, and on
    success writes nothing back: the conversion happens and the caller's value
    stays in the struct.
    """
    mode = features.error_offset_input
    if mode not in ("rejected", "ignored"):
        pytest.fail(f"nonzero input error_offset answered {mode or 'nothing'} in the probe")
    env.host_do_rmw(0, 0, 0x61)
    arg = api.attrs2(0, PAGE, PRIVATE, env.mode, error_offset=3 * PAGE)
    if mode == "rejected":
        assert _errno(env.gmem_fd, arg) == errno.EINVAL
        env.host_read(0, 0x61)  # nothing converted
        return
    assert _errno(env.gmem_fd, arg) == 0, "output-only error_offset made a conversion fail"
    assert arg.error_offset == 3 * PAGE, "the kernel wrote back on success"
    env.host_expect_sigbus(0)  # converted: the garbage in error_offset changed nothing
    env.host_read(1, 0)  # and only the requested page


def test_validation_before_refcount_check(env: ConversionEnv) -> None:
    """Order: field validation (EINVAL) comes before the refcount check (EAGAIN)."""
    env.host_do_rmw(0, 0, 0x61)
    r, w = os.pipe()
    try:
        assert libc.vmsplice(w, env.mem.addr, PAGE) == PAGE
        bad = api.attrs2(0, PAGE, PRIVATE, env.mode, reserved={10: 1})
        assert _errno(env.gmem_fd, bad) == errno.EINVAL
        good = api.attrs2(0, PAGE, PRIVATE, env.mode)
        assert _errno(env.gmem_fd, good) == errno.EAGAIN
    finally:
        os.close(r)
        os.close(w)


def test_validation_before_content_mode_check(env: ConversionEnv, features: Features) -> None:
    """Order: EINVAL checks (steps 2-8) before the mode-support check (EOPNOTSUPP, 9a)."""
    refused = [
        (flag, target)
        for name, flag in (("zero", ZERO), ("preserve", PRESERVE))
        for direction, target in (("to_private", PRIVATE), ("to_shared", 0))
        if features.content_mode(name, "to_shared" if direction == "to_private" else "to_private")
        and not features.content_mode(name, direction)
    ]
    if not refused:
        require_content_modes(features)
        pytest.skip("no content mode that is accepted in one direction and refused in the other")
    flag, target = refused[0]
    if target == 0:
        env.set_attributes(0, PAGE, PRIVATE)
    assert _errno(env.gmem_fd, api.attrs2(0, PAGE + 1, target, flag)) == errno.EINVAL
    assert _errno(env.gmem_fd, api.attrs2(0, PAGE, target, flag)) == errno.EOPNOTSUPP


# --- state model (§2.3) -----------------------------------------------------------------------


def test_host_fault_follows_state(env: ConversionEnv) -> None:
    env.host_do_rmw(1, 0, 0x11)
    env.set_attributes(PAGE, PAGE, PRIVATE)
    env.host_expect_sigbus(1)
    for page in (0, 2, 3):
        env.host_read(page, 0)  # neighbours untouched
    env.set_attributes(PAGE, PAGE, 0)
    got = _host_byte(env, 1)  # accessible again
    if not env.scrambles:
        assert got == 0x11, f"contents lost across shared->private->shared: {got:#x}"


def _host_byte(env: ConversionEnv, page: int) -> int:
    result: list[int] = []
    r, w = os.pipe()
    mem = env.mem

    def body() -> None:
        os.write(w, bytes([mem.read_byte(page * PAGE)]))

    child.expect_ok("host read", body)
    result.append(os.read(r, 1)[0])
    os.close(r)
    os.close(w)
    return result[0]


def test_init_private_host_sigbus(private_env: ConversionEnv) -> None:
    for page in range(N):
        private_env.host_expect_sigbus(page)


def test_noop_conversion_succeeds(env: ConversionEnv, private_env: ConversionEnv) -> None:
    env.set_attributes(0, N * PAGE, 0)
    private_env.set_attributes(0, N * PAGE, PRIVATE)
    env.host_read(0, 0)
    private_env.host_expect_sigbus(0)


def test_before_allocation_host(env: ConversionEnv, private_env: ConversionEnv) -> None:
    """Conversions of never-allocated ranges are recorded and apply on first fault."""
    env.set_attributes(0, PAGE, PRIVATE)
    env.host_expect_sigbus(0)
    private_env.set_attributes(0, PAGE, 0)
    private_env.host_do_rmw(0, 0, 0x41)
    private_env.host_expect_sigbus(1)


def test_unallocated_folios_host(env: ConversionEnv) -> None:
    env.host_do_rmw(2, 0, 0x41)
    env.set_attributes(0, N * PAGE, PRIVATE)
    for page in range(N):
        env.host_expect_sigbus(page)
    env.set_attributes(0, N * PAGE, 0)
    for page in (0, 1, 3):
        env.host_read(page, 0)  # never allocated: zero after any conversion


def test_truncate_host(env: ConversionEnv) -> None:
    env.host_do_rmw(0, 0, 0x41)
    libc.punch_hole(env.gmem_fd, 0, PAGE)
    env.host_do_rmw(0, 0, 0x41)  # re-zeroed, still shared
    env.set_attributes(0, PAGE, PRIVATE)
    libc.punch_hole(env.gmem_fd, 0, PAGE)
    env.host_expect_sigbus(0)  # still private after the punch
    env.set_attributes(0, PAGE, 0)
    env.host_read(0, 0)  # the punched page comes back zeroed


def test_forked_mapping_zapped(env: ConversionEnv) -> None:
    """A child that faulted the page in loses it when the parent converts to private."""
    mem = env.mem
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()

    def body() -> None:
        mem.write_byte(0, 0x42)  # fault in, in the child
        os.write(w2, b"m")
        assert os.read(r1, 1) == b"c"
        child.expect_sigbus("child read after conversion", lambda: mem.read_byte(0))

    proc = child.spawn(body)
    try:
        assert os.read(r2, 1) == b"m", "child died before mapping the page"
        env.set_attributes(0, PAGE, PRIVATE)
        os.write(w1, b"c")
    finally:
        for fd in (r1, w1, r2, w2):
            os.close(fd)
    result = proc.wait(60)
    assert result.exit_code == 0, f"child {result.describe()}"


# --- refcounts (§2.2 9d) ---------------------------------------------------------------------


@pytest.mark.parametrize("pinned_page", range(N))
def test_elevated_refcount_host(env: ConversionEnv, pinned_page: int) -> None:
    """vmsplice-pinned page: EAGAIN, error_offset = its offset, and no partial progress."""
    for page in range(N):
        env.host_do_rmw(page, 0, 0x30 + page)
    r, w = os.pipe()
    try:
        assert libc.vmsplice(w, env.mem.addr + pinned_page * PAGE, PAGE) == PAGE
        off = env.expect_conversion_failure(0, N * PAGE, PRIVATE, errno.EAGAIN)
        assert off == pinned_page * PAGE, f"error_offset {off:#x}"
        for page in range(N):  # nothing converted, not even pages before the pinned one
            env.host_read(page, 0x30 + page)
    finally:
        os.close(r)
        os.close(w)
    env.set_attributes(0, N * PAGE, PRIVATE)
    for page in range(N):
        env.host_expect_sigbus(page)


@pytest.mark.parametrize("pinned_page", [0, 2])
def test_elevated_refcount_gup_test(env: ConversionEnv, pinned_page: int) -> None:
    """v8: a FOLL_LONGTERM pin (CONFIG_GUP_TEST, the v8 selftests' pin_pages()) blocks to-private.

    kvm_gmem_is_safe_for_conversion() finds the pinned folio's refcount above
    folio_nr_pages + 1 even after lru_add_drain_all(): EAGAIN with error_offset =
    the pinned page's file offset, nothing converted (not even the pages before
    it), and the same request succeeds once the pin is dropped.
    """
    if not gup.available():
        pytest.skip(f"GUP_TEST not available ({uapi.GUP_TEST_PATH}: CONFIG_GUP_TEST off?)")
    for page in range(N):
        env.host_do_rmw(page, 0, 0x30 + page)
    with gup.LongtermPin(env.mem.addr + pinned_page * PAGE, PAGE):
        off = env.expect_conversion_failure(0, N * PAGE, PRIVATE, errno.EAGAIN)
        assert off == pinned_page * PAGE, f"error_offset {off:#x}"
        for page in range(N):
            env.host_read(page, 0x30 + page)
    env.set_attributes(0, N * PAGE, PRIVATE)
    for page in range(N):
        env.host_expect_sigbus(page)


def test_to_shared_ignores_refcount(private_env: ConversionEnv) -> None:
    """No refcount check for private->shared: a pinned page in the range does not block it."""
    t = private_env
    t.set_attributes(PAGE, PAGE, 0)  # page 1 shared, page 0 still private
    t.host_do_rmw(1, 0, 0x11)
    r, w = os.pipe()
    try:
        assert libc.vmsplice(w, t.mem.addr + PAGE, PAGE) == PAGE
        # [0, 2 pages) is mixed, so this is a real conversion (not the no-op shortcut)
        # over a range holding a pinned folio: it must not EAGAIN.
        t.set_attributes(0, 2 * PAGE, 0)
    finally:
        os.close(r)
        os.close(w)
    t.host_do_rmw(0, 0 if not t.scrambles else _host_byte(t, 0), 0x22)


# --- content modes (RFC v3..v5) -------------------------------------------------------------------


def _require_mode(features: Features, name: str, direction: str) -> None:
    require_content_modes(features)
    if not features.content_mode(name, direction):
        pytest.skip(f"content mode {name.upper()} {direction} refused by this kernel")


def test_content_zero_to_shared(env: ConversionEnv, features: Features) -> None:
    _require_mode(features, "zero", "to_shared")
    env.host_do_rmw(0, 0, 0x41)
    api.gmem_set_attributes(env.gmem_fd, 0, PAGE, PRIVATE, _to_private_mode(features))
    api.gmem_set_attributes(env.gmem_fd, 0, PAGE, 0, ZERO)
    env.host_read(0, 0)


def _to_private_mode(features: Features) -> int:
    return PRESERVE if features.content_mode("preserve", "to_private") else 0


def test_content_preserve_round_trip(env: ConversionEnv, features: Features) -> None:
    _require_mode(features, "preserve", "to_private")
    _require_mode(features, "preserve", "to_shared")
    env.host_do_rmw(0, 0, 0x42)
    api.gmem_set_attributes(env.gmem_fd, 0, PAGE, PRIVATE, PRESERVE)
    api.gmem_set_attributes(env.gmem_fd, 0, PAGE, 0, PRESERVE)
    env.host_read(0, 0x42)


def test_convert_mode_unspecified_scrambles(env: ConversionEnv, features: Features) -> None:
    """v3/v4 SW_PROTECTED: flags 0 overwrites allocated pages with random bytes."""
    require_content_modes(features)
    env.host_do_rmw(0, 0, ord("B"))
    arg = api.attrs2(0, PAGE, PRIVATE, 0)
    api.set_memory_attributes2(env.gmem_fd, arg)
    api.gmem_set_attributes(env.gmem_fd, 0, PAGE, 0, 0)
    got = _host_byte(env, 0)
    assert got != ord("B"), "MODE_UNSPECIFIED left the page intact (1/256 false-failure chance)"


def test_convert_to_private_does_not_support_zero(env: ConversionEnv, features: Features) -> None:
    """v4+: ZERO to private -> EOPNOTSUPP, error_offset = start."""
    _require_mode(features, "zero", "to_shared")
    if features.content_mode("zero", "to_private"):
        pytest.skip("ZERO accepted for to-private (RFC v3 semantics)")
    arg = api.attrs2(0, PAGE, PRIVATE, ZERO)
    assert _errno(env.gmem_fd, arg) == errno.EOPNOTSUPP
    assert arg.error_offset == 0


# --- v8 uapi: capability, struct layout, error_offset, module parameter -------------------


def test_gmem_attributes_cap_probed(features: Features) -> None:
    """One capability answers like KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES iff the ioctl works.

    v8 kvm_vm_ioctl_check_extension_generic(): the cap answers PRIVATE when
    gmem_in_place_conversion is on and the scope can have private memory (/dev/kvm,
    SW_PROTECTED/CoCo VMs), else 0; and that is exactly when kvm_gmem_ioctl()
    serves KVM_SET_MEMORY_ATTRIBUTES2. The number is found by scanning, never
    assumed (v5: 249, v8: 250; mainline reuses both for s390/ppc caps).
    """
    require_kvm(features)
    candidates = features.gmem_attributes_cap_candidates
    if not features.attrs2_gmem:
        assert not candidates, f"{candidates} answer PRIVATE but the gmem ioctl is absent"
        return
    if not features.sw_protected:
        pytest.skip("VM type sw_protected not supported: the capability cannot be told apart")
    assert len(candidates) == 1, f"capabilities answering like it: {candidates}"
    assert features.gmem_attributes_cap == candidates[0]


def test_attrs2_writeback_layout(env: ConversionEnv) -> None:
    """On failure v8 copies the whole 128-byte struct back with only error_offset (byte 32) set.

    kvm_gmem_set_attributes() does copy_to_user(argp, &attrs, sizeof(attrs)) after
    setting attrs.error_offset: the kernel's struct is 128 bytes (nothing written
    past it), error_offset is at offset 32, and every input field comes back as
    it went in. Run on an EAGAIN with the pinned page at offset 2 pages.
    """
    size = ctypes.sizeof(uapi.KvmMemoryAttributes2)
    assert size == 128 and uapi.KvmMemoryAttributes2.error_offset.offset == 32
    arg = api.attrs2(PAGE, 3 * PAGE, PRIVATE, env.mode)
    sentinel = b"\xa5" * 64
    buf = bytearray(bytes(arg) + sentinel)  # bytes past the struct must stay untouched
    env.host_do_rmw(2, 0, 0x52)
    r, w = os.pipe()
    try:
        assert libc.vmsplice(w, env.mem.addr + 2 * PAGE, PAGE) == PAGE
        with pytest.raises(OSError) as info:
            fcntl.ioctl(env.gmem_fd, uapi.KVM_SET_MEMORY_ATTRIBUTES2, buf, True)
    finally:
        os.close(r)
        os.close(w)
    assert info.value.errno == errno.EAGAIN
    assert bytes(buf[size:]) == sentinel, "the kernel wrote past 128 bytes"
    back = uapi.KvmMemoryAttributes2.from_buffer_copy(bytes(buf[:size]))
    assert back.error_offset == 2 * PAGE
    expect = api.attrs2(PAGE, 3 * PAGE, PRIVATE, env.mode, error_offset=2 * PAGE)
    assert bytes(back) == bytes(expect), "input fields changed in the write-back"


def test_error_offset_is_a_file_offset(env: ConversionEnv) -> None:
    """error_offset is the blocking page's offset in the file, not relative to the request.

    v8: err_index = max(start, folio->index), returned as err_index << PAGE_SHIFT.
    A request over pages [1, 4) with page 3 pinned reports 3 pages, not 2; a pin
    outside the requested range (page 0) blocks nothing.
    """
    for page in range(N):
        env.host_do_rmw(page, 0, 0x40 + page)
    r0, w0 = os.pipe()
    r3, w3 = os.pipe()
    try:
        assert libc.vmsplice(w0, env.mem.addr, PAGE) == PAGE
        assert libc.vmsplice(w3, env.mem.addr + 3 * PAGE, PAGE) == PAGE
        off = env.expect_conversion_failure(PAGE, 3 * PAGE, PRIVATE, errno.EAGAIN)
        assert off == 3 * PAGE, f"error_offset {off:#x}, expected the file offset {3 * PAGE:#x}"
        env.host_read(1, 0x41)  # nothing converted
        env.set_attributes(PAGE, 2 * PAGE, PRIVATE)  # pinned page 0 is outside [1, 3)
    finally:
        for fd in (r0, w0, r3, w3):
            os.close(fd)
    env.host_expect_sigbus(1)
    env.host_expect_sigbus(2)
    env.host_read(0, 0x40)
    env.host_read(3, 0x43)


def test_gmem_in_place_conversion_param(features: Features) -> None:
    """kvm.gmem_in_place_conversion (v8; RFC v3-v7: kvm.vm_memory_attributes, inverted).

    v8 kvm_main.c: the 0444 parameter (default !CONFIG_KVM_VM_MEMORY_ATTRIBUTES)
    picks one tracking for the whole module. On: kvm_gmem_ioctl() serves
    KVM_SET_MEMORY_ATTRIBUTES2, kvm_arch_supports_gmem_init_shared() lets
    SW_PROTECTED VMs create INIT_SHARED guest_memfds, and
    kvm_supported_vm_mem_attributes() reports no per-VM PRIVATE. Off: ENOTTY,
    MMAP only for SW_PROTECTED VMs, and (with CONFIG_KVM_VM_MEMORY_ATTRIBUTES=y)
    per-VM PRIVATE through KVM_SET_MEMORY_ATTRIBUTES.
    """
    require_kvm(features)
    if features.gmem_in_place_conversion_param is not None:
        name, on = "gmem_in_place_conversion", features.gmem_in_place_conversion_param == "Y"
    elif features.vm_memory_attributes_param is not None:
        name, on = "vm_memory_attributes", features.vm_memory_attributes_param == "N"
    else:
        pytest.skip(
            "neither kvm.gmem_in_place_conversion (v8+) nor kvm.vm_memory_attributes "
            "(RFC v3-v7) exists: not a series kernel, or no arch private memory"
        )
    assert features.attrs2_gmem == on, (
        f"kvm.{name} says in-place conversion {'on' if on else 'off'}, "
        f"the guest_memfd ioctl answered {features.attrs2_gmem_errno}"
    )
    if not features.sw_protected:
        return
    flags = features.gmem_flags.get("sw_protected", 0)
    assert bool(flags & uapi.GUEST_MEMFD_FLAG_INIT_SHARED) == on, f"sw_protected gmem flags {flags}"
    per_vm = bool(features.vm_attributes.get("sw_protected", 0) & PRIVATE)
    if on:
        assert not per_vm, "per-VM PRIVATE still advertised with in-place conversion on"
    elif kernel_config("KVM_VM_MEMORY_ATTRIBUTES") == "y":
        assert per_vm, "in-place conversion off but no per-VM PRIVATE attribute either"
