"""Build-failure classification on compiler and make output captured from real tools
(gcc 12.2 and GNU make 4.3 on Debian 12; the kernel lines from a 7.3 build here)."""

from __future__ import annotations

from pathlib import Path

from harness import buildlog

GCC_UNDECLARED = """\
  CC      virt/kvm/guest_memfd.o
../virt/kvm/guest_memfd.c: In function 'kvm_gmem_get_folio':
../virt/kvm/guest_memfd.c:112:22: error: 'x' undeclared (first use in this function)
  112 |         return x;
      |                ^
../virt/kvm/guest_memfd.c:112:22: note: each undeclared identifier is reported only once
make[5]: *** [../scripts/Makefile.build:287: virt/kvm/guest_memfd.o] Error 1
make[4]: *** [../scripts/Makefile.build:556: virt/kvm] Error 2
make[1]: *** [/src/Makefile:2010: .] Error 2
make: *** [Makefile:248: __sub-make] Error 2
"""

LD_UNDEFINED = """\
  LD      vmlinux.o
ld: vmlinux.o: in function `kvm_gmem_init':
guest_memfd.c:(.init.text+0x5): undefined reference to `kvm_gmem_missing'
make[2]: *** [../scripts/Makefile.vmlinux_o:72: vmlinux.o] Error 1
"""

DISK_FULL = """\
  CC      mm/filemap.o
../mm/filemap.c:4012:1: fatal error: error writing to /tmp/ccA1.s: No space left on device
compilation terminated.
make[3]: *** [../scripts/Makefile.build:287: mm/filemap.o] Error 1
"""

OOM = """\
  CC      arch/x86/kvm/vmx/nested.o
gcc: fatal error: Killed signal terminated program cc1
compilation terminated.
make[4]: *** [../scripts/Makefile.build:287: arch/x86/kvm/vmx/nested.o] Error 1
"""


def test_compiler_error_is_the_trees_finding() -> None:
    f = buildlog.classify(GCC_UNDECLARED)
    assert f.tree
    assert (
        f.first_error
        == "../virt/kvm/guest_memfd.c:112:22: error: 'x' undeclared (first use in this function)"
    )
    assert "return x;" in f.excerpt  # the source line gcc quoted comes along
    assert f.reason.startswith("the kernel does not build: ../virt/kvm/guest_memfd.c:112:22")


def test_linker_error_is_the_trees_finding() -> None:
    f = buildlog.classify(LD_UNDEFINED)
    assert f.tree
    assert "undefined reference to `kvm_gmem_missing'" in f.first_error


def test_disk_full_is_the_machines_even_with_error_lines() -> None:
    f = buildlog.classify(DISK_FULL)
    assert not f.tree
    assert "disk full" in f.reason
    assert "No space left on device" in f.excerpt


def test_oom_killed_compiler_is_the_machines() -> None:
    f = buildlog.classify(OOM)
    assert not f.tree
    assert "out of memory" in f.reason


def test_make_error_without_compiler_line_is_the_trees() -> None:
    f = buildlog.classify("make[1]: *** [Makefile:12: prepare] Error 1\n")
    assert f.tree
    assert "Error 1" in f.reason


def test_no_error_line_at_all_is_not_blamed_on_the_tree() -> None:
    f = buildlog.classify("  CC      foo.o\n  CC      bar.o\n")
    assert not f.tree


def test_unreadable_log(tmp_path: Path) -> None:
    f = buildlog.classify_file(tmp_path / "missing.log")
    assert not f.tree and "unreadable" in f.reason
