"""Per-architecture facts as data: one frozen value per architecture.

Everything the build, the selftest build and the boot need to know about the target
architecture lives in one entry here (kunit's qemu_configs idea), so a second
architecture is one more entry, not edits across modules.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Arch:
    name: str  # uname -m
    kbuild_arch: str  # ARCH= / SRCARCH for Kconfig
    kernel_image: str  # the make target that produces the bootable image
    kernel_image_path: str  # where it lands, relative to the build folder
    qemu: str  # the QEMU system emulator
    qemu_machine: str
    tcg_cpu: str  # -cpu under TCG: must expose the virtualisation extension
    kvm_cpu: str  # -cpu under KVM, before the nested-virt flag is added
    virt_flags: tuple[str, ...]  # /proc/cpuinfo flags that mean nested virt works
    elf_machine: int  # e_machine of a binary built for it (selftests must be static)
    selftest_dirs: tuple[str, ...]  # the kselftest arch folder names, newest first
    console: str  # the serial console device
    qemu_package: str  # the Debian package that ships `qemu`


X86_64 = Arch(
    name="x86_64",
    kbuild_arch="x86",
    kernel_image="bzImage",
    kernel_image_path="arch/x86/boot/bzImage",
    qemu="qemu-system-x86_64",
    qemu_machine="q35",
    tcg_cpu="max",
    kvm_cpu="host",
    virt_flags=("vmx", "svm"),
    elf_machine=62,  # EM_X86_64
    selftest_dirs=("x86", "x86_64"),  # x86_64/ before 6.14
    console="ttyS0",
    qemu_package="qemu-system-x86",
)

ARCHES: dict[str, Arch] = {a.name: a for a in (X86_64,)}
HOST = X86_64  # the only architecture the lab builds and boots today
