"""A fake kernel tree: just enough Makefile, Kconfig and merge_config.sh for the stages.

`make bzImage` compiles one file, virt/kvm/guest_memfd.c, through $(CC) (the lab passes
"ccache gcc", so ccache's figures are real), "links" by concatenating .config and that
file, and counts each run in $(O)/compile-count, so tests can tell a no-op rebuild from
a real one. A concurrent.c at the top of the tree is compiled into the same ccache
without this build's stats log: another build sharing the cache while this make runs.
olddefconfig is a tiny independent resolver (single-symbol `depends on`, unknown
symbols dropped) so the lab's own Kconfig reader is not its own oracle. The selftests
Makefile copies a hand-made static x86-64 ELF, and fails for a test whose source
contains FAIL.
"""

from __future__ import annotations

import os
import struct
import subprocess
from collections.abc import Mapping
from pathlib import Path

MAKEFILE = """\
O ?= .
.PHONY: defconfig olddefconfig bzImage headers_install
defconfig:
\tmkdir -p $(O) && cp $(CURDIR)/arch/x86/configs/x86_64_defconfig $(O)/.config
olddefconfig:
\tpython3 $(CURDIR)/scripts/kconfig/fakeconf.py $(CURDIR) $(O)/.config
bzImage: $(O)/arch/x86/boot/bzImage
$(O)/arch/x86/boot/bzImage: $(O)/.config $(CURDIR)/virt/kvm/guest_memfd.c
\tmkdir -p $(dir $@)
\techo "  CC      virt/kvm/guest_memfd.o"
\tif grep -q BROKEN $(CURDIR)/virt/kvm/guest_memfd.c; then \\
\t    echo "guest_memfd.c:1: error: x" >&2; exit 2; fi
\tif grep -q NOSPACE $(CURDIR)/virt/kvm/guest_memfd.c; then \\
\t    echo "guest_memfd.o: fatal error: No space left on device" >&2; exit 2; fi
\t$(CC) -c $(CURDIR)/virt/kvm/guest_memfd.c -o $(O)/guest_memfd.o
\tif [ -f $(CURDIR)/concurrent.c ]; then \\
\t    env -u CCACHE_STATSLOG ccache gcc -c $(CURDIR)/concurrent.c -o $(O)/concurrent.o; fi
\techo compiled >> $(O)/compile-count
\tcat $^ > $(O)/vmlinux
\tcp $(O)/vmlinux $@
\techo "ffffffff81000000 T _text" > $(O)/System.map
headers_install:
\tmkdir -p $(INSTALL_HDR_PATH)/include/linux
\techo '/* kvm uapi */' > $(INSTALL_HDR_PATH)/include/linux/kvm.h
"""

FAKECONF = """\
import re, sys
src, config = sys.argv[1], sys.argv[2]
deps, known = {}, set()
for kc in ("Kconfig", "arch/x86/Kconfig", "virt/kvm/Kconfig"):
    current = None
    for line in open(f"{src}/{kc}"):
        m = re.match(r"\\s*(?:menu)?config\\s+(\\w+)\\s*$", line)
        if m:
            current = m.group(1)
            known.add(current)
        m = re.match(r"\\s*depends on\\s+(\\w+)\\s*$", line)
        if m and current:
            deps.setdefault(current, []).append(m.group(1))
values = {}
for line in open(config):
    m = re.match(r"CONFIG_(\\w+)=(.*)", line.strip())
    if m and m.group(1) in known:
        values[m.group(1)] = m.group(2)
changed = True
while changed:
    changed = False
    for sym in list(values):
        if any(values.get(d) != "y" for d in deps.get(sym, [])):
            del values[sym]
            changed = True
with open(config, "w") as out:
    out.write("# fake kernel configuration\\n")
    for sym in sorted(known):
        if sym in values:
            out.write(f"CONFIG_{sym}={values[sym]}\\n")
        else:
            out.write(f"# CONFIG_{sym} is not set\\n")
"""

MERGE_CONFIG = """\
#!/bin/sh
# merge_config.sh -m -O dir base fragment...: later values win, like the real one.
[ "$1" = "-m" ] && shift
[ "$1" = "-O" ] && { out="$2"; shift 2; }
base="$1"; shift
cat "$base" "$@" > "$out/.merge.tmp"
python3 - "$out/.merge.tmp" "$out/.config" <<'EOF'
import re, sys
vals = {}
for line in open(sys.argv[1]):
    line = line.strip()
    m = re.match(r"CONFIG_(\\w+)=(.*)", line) or re.match(r"# CONFIG_(\\w+) is (not set)", line)
    if m:
        vals[m.group(1)] = m.group(2)
with open(sys.argv[2], "w") as f:
    for k, v in vals.items():
        f.write(f"# CONFIG_{k} is not set\\n" if v == "not set" else f"CONFIG_{k}={v}\\n")
EOF
rm -f "$out/.merge.tmp"
"""

TOP_KCONFIG = """\
mainmenu "Fake Linux"
source "arch/$(SRCARCH)/Kconfig"
source "virt/kvm/Kconfig"
"""

ARCH_KCONFIG = """\
config X86_64
\tdef_bool y
config EXPERT
\tbool "Expert"
config X86_MCE
\tbool "MCE"
config INTEL_TDX_HOST
\tbool "TDX host"
\tdepends on X86_MCE
\thelp
\t  Not a definition:
\t  config NOT_A_SYMBOL
\t  depends on NOTHING
config CONTIG_ALLOC
\tdef_bool X86_MCE || CMA
"""

KVM_KCONFIG = """\
menuconfig VIRTUALIZATION
\tbool "Virtualization"
if VIRTUALIZATION
config KVM
\ttristate "KVM"
config KVM_AMD
\ttristate "KVM for AMD"
\tdepends on KVM
config KVM_SW_PROTECTED_VM
\tbool "SW protected VMs"
\tdepends on KVM
\tdepends on EXPERT
config KVM_INTEL_TDX
\tbool "TDX"
\tdepends on INTEL_TDX_HOST
endif
"""

DEFCONFIG = "CONFIG_X86_64=y\nCONFIG_VIRTUALIZATION=y\nCONFIG_KVM=y\n"

SELFTEST_MAKEFILE = """\
TEST_GEN_PROGS_x86 += guest_memfd_test
TEST_GEN_PROGS_x86 += x86/private_mem_conversions_test
TEST_GEN_PROGS_x86 += x86/private_mem_kvm_exits_test
TEST_GEN_PROGS_x86 += pre_fault_memory_test
OUTPUT ?= .
$(OUTPUT)/%: %.c
\tmkdir -p $(dir $@)
\tif grep -q FAIL $<; then echo "$<:1: error: boom" >&2; exit 1; fi
\tcp $(CURDIR)/static.elf $@
"""


def elf(machine: int = 62, interp: bool = False) -> bytes:
    """A minimal 64-bit little-endian ELF executable header (+ one program header)."""
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    phnum = 1
    header = ident + struct.pack(
        "<HHIQQQIHHHHHH", 2, machine, 1, 0x401000, 64, 0, 0, 64, 56, phnum, 64, 0, 0
    )
    p_type = 3 if interp else 1  # PT_INTERP or PT_LOAD
    return header + struct.pack("<IIQQQQQQ", p_type, 5, 0, 0x400000, 0x400000, 120, 120, 4096)


def make_tree(root: Path, *, git: bool = False) -> Path:
    """Write the fake tree at root (optionally as a git repo with one commit)."""
    files = {
        "Makefile": MAKEFILE,
        "Kconfig": TOP_KCONFIG,
        "arch/x86/Kconfig": ARCH_KCONFIG,
        "arch/x86/configs/x86_64_defconfig": DEFCONFIG,
        "virt/kvm/Kconfig": KVM_KCONFIG,
        "virt/kvm/guest_memfd.c": "/* guest_memfd */\n",
        "scripts/kconfig/merge_config.sh": MERGE_CONFIG,
        "scripts/kconfig/fakeconf.py": FAKECONF,
        "tools/testing/selftests/kvm/Makefile": SELFTEST_MAKEFILE,
        "tools/testing/selftests/kvm/guest_memfd_test.c": "int main(void) { return 0; }\n",
        "tools/testing/selftests/kvm/pre_fault_memory_test.c": "int main(void) { return 0; }\n",
        "tools/testing/selftests/kvm/x86/private_mem_conversions_test.c": "int x;\n",
        "tools/testing/selftests/kvm/x86/private_mem_kvm_exits_test.c": "FAIL\n",
        "tools/testing/selftests/kvm/x86/private_mem_conversions_test.sh": "#!/bin/sh\n",
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "scripts/kconfig/merge_config.sh").chmod(0o755)
    (root / "tools/testing/selftests/kvm/static.elf").write_bytes(elf())
    if git:
        git_commit(root, "fake linux", init=True)
    return root


def git_commit(root: Path, message: str, *, init: bool = False) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], env=env, capture_output=True, text=True, check=True
        ).stdout.strip()

    if init:
        git("init", "-q", "-b", "main")
    git("add", "-A")
    git("commit", "-q", "-m", message)
    return git("rev-parse", "HEAD")


# The suites of the repository's lab.yaml that decide what the build stage builds
# (kselftest_build.wanted): tests the fake tree builds, fails to build and lacks.
SUITES = {
    "k": {
        "kind": "kselftest",
        "tests": [
            "guest_memfd_test",
            "guest_memfd_conversions_test",
            "x86/private_mem_conversions_test",
            "x86/private_mem_kvm_exits_test",
            "pre_fault_memory_test",
        ],
    },
    "d": {"kind": "conversions-driver"},
}


def write_lab(root: Path, kernels: Mapping[str, object], fragments: Mapping[str, str]) -> Path:
    """A lab.yaml at root with the given kernels and one config set per fragment."""
    import yaml

    (root / "kernel-config").mkdir(parents=True, exist_ok=True)
    for name, text in fragments.items():
        (root / "kernel-config" / f"{name}.config").write_text(text)
    first = next(iter(kernels))
    data = {
        "kernels": dict(kernels),
        "configs": {n: {"base": "defconfig", "fragments": [f"{n}.config"]} for n in fragments},
        "suites": SUITES,
        "defaults": {"kernel": first, "config": next(iter(fragments)), "suites": ["k"]},
    }
    path = root / "lab.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


LAB_FRAGMENT = "CONFIG_KVM=y\nCONFIG_KVM_AMD=y\nCONFIG_EXPERT=y\nCONFIG_KVM_SW_PROTECTED_VM=y\n"
