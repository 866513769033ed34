"""The real thing: Debian's linux-source-7.3 built with the lab config through the cache.

Slow (a cold build is ~13 min on 2 cores; with the cache warm, about a minute). Checks
the bzImage, the config verification, the static x86-64 selftests, that a second build
compiles nothing, and that touching virt/kvm/guest_memfd.c rebuilds only that.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from harness import build, config, kconfig, kselftest_build, source
from harness.errors import UserError

pytestmark = pytest.mark.slow

BUILT_ON_MAINLINE = (
    "guest_memfd_test",
    "x86/private_mem_conversions_test",
    "x86/private_mem_kvm_exits_test",
    "pre_fault_memory_test",
)


@pytest.fixture(scope="module")
def lab() -> config.LabConfig:
    return config.load()


@pytest.fixture(scope="module")
def mainline(lab: config.LabConfig) -> build.KernelBuild:
    return build.build_kernel(build.prepare_request(lab, "mainline", "lab"))


def test_bzimage_and_config(mainline: build.KernelBuild, lab: config.LabConfig) -> None:
    head = mainline.bzimage.read_bytes()[:0x210]
    assert head[:2] == b"MZ" and head[0x202:0x206] == b"HdrS"  # x86 boot protocol
    assert mainline.vmlinux.stat().st_size > 10 << 20
    final = kconfig.parse_config_lines(mainline.config.read_text().splitlines())
    for symbol in (
        "KVM",
        "KVM_AMD",
        "KVM_INTEL",
        "EXPERT",
        "KVM_SW_PROTECTED_VM",
        "VIRTIO_BLK",
        "VIRTIO_NET",
        "EXT4_FS",
        "DEVTMPFS",
        "NUMA",
        "SERIAL_8250_CONSOLE",
    ):
        assert final.get(symbol) == "y", symbol
    data = json.loads(mainline.manifest.read_text())
    assert data["config"]["verification"]["ok"] is True
    assert data["config"]["verification"]["mismatches"] == []


def test_selftests_static_x86_64(mainline: build.KernelBuild) -> None:
    for name in BUILT_ON_MAINLINE:
        assert mainline.selftests[name] == "built", name
        binary = mainline.selftests_dir / name
        assert kselftest_build.static_x86_64_problem(binary) is None
        described = subprocess.run(
            ["file", "-b", str(binary)], capture_output=True, text=True, check=False
        ).stdout
        if described:  # `file` is not a lab dependency; the ELF check above is
            assert "x86-64" in described and "statically linked" in described, described
    # Not in 7.3: the series adds it.
    assert mainline.selftests["guest_memfd_conversions_test"] == "absent"


def test_second_build_compiles_nothing(mainline: build.KernelBuild, lab: config.LabConfig) -> None:
    # How long this takes is bench/rebuild.py's business; here: nothing is compiled.
    again = build.build_kernel(build.prepare_request(lab, "mainline", "lab"))
    assert again.build_dir == mainline.build_dir
    cc = json.loads(again.manifest.read_text())["ccache"]
    # No compiler run: nothing missed the cache (hits, if any, are Makefile probes like
    # cc-option answered from the cache), and the make log names no compiled object.
    assert cc["misses"] == 0, cc
    # Counted from this run's own stats log, so a build beside it cannot add misses.
    assert again.log.with_suffix(".ccache-stats.log").is_file()
    assert not [ln for ln in again.log.read_text().splitlines() if ln.startswith("  CC ")]


def test_touching_guest_memfd_rebuilds_only_it(
    mainline: build.KernelBuild, lab: config.LabConfig
) -> None:
    tree = Path(json.loads(mainline.manifest.read_text())["source"]["path"])
    (tree / "virt" / "kvm" / "guest_memfd.c").touch()
    again = build.build_kernel(build.prepare_request(lab, "mainline", "lab"))
    compiled = [
        line.split()[-1]
        for line in again.log.read_text().splitlines()
        if line.startswith("  CC ") and line.split()[-1].endswith(".o")
    ]
    # guest_memfd.o, plus what every relink regenerates: version stamps and the bzImage
    # wrapper (arch/x86/boot/compressed/misc.o embeds the new vmlinux's size).
    assert any("guest_memfd.o" in obj for obj in compiled), compiled
    others = [
        o
        for o in compiled
        if "guest_memfd" not in o and "version" not in o and not o.startswith("arch/x86/boot/")
    ]
    assert others == [], others


def test_series_only_symbol_is_reported_for_mainline(lab: config.LabConfig) -> None:
    _, cfg = build.configure_kernel(lab, "mainline", "sw-protected")
    assert cfg.ok
    assert "KVM_VM_MEMORY_ATTRIBUTES" in cfg.unknown_symbols


def test_tdx_without_host_dependencies_fails(tmp_path: Path, lab: config.LabConfig) -> None:
    (tmp_path / "kernel-config").mkdir()
    for frag in (lab.root / "kernel-config").glob("*.config"):
        (tmp_path / "kernel-config" / frag.name).write_text(frag.read_text())
    (tmp_path / "kernel-config" / "badtdx.config").write_text("CONFIG_KVM_INTEL_TDX=y\n")
    data = lab.model_dump(mode="json")
    data["configs"]["badtdx"] = {"base": "defconfig", "fragments": ["lab.config", "badtdx.config"]}
    data["root"] = str(tmp_path)
    bad = config.LabConfig.model_validate(data)
    tree, cfg = build.configure_kernel(bad, "mainline", "badtdx")
    with pytest.raises(UserError) as err:
        kconfig.require_verified(cfg, tree)
    assert "CONFIG_KVM_INTEL_TDX: requested y, got n" in err.value.message
    assert "INTEL_TDX_HOST [=n]" in err.value.message


def test_unreachable_series_fails_fast(lab: config.LabConfig) -> None:
    # Only the probe: where GitHub is reachable this must not start a full fetch.
    spec = lab.kernels["series"].git
    assert spec is not None
    start = time.monotonic()
    try:
        source.git._probe_remote("series", spec.url, spec.ref)
    except UserError as exc:
        assert time.monotonic() - start < 30
        assert spec.url in exc.message
        assert "--kernel mainline" in exc.message
    else:
        pytest.skip("GitHub is reachable here; the offline failure path is not exercised")
