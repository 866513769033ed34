"""Compiling one object like kbuild: the target name from the build's .cmd file (x86
builds virt/kvm/*.c from arch/x86/kvm), falling back to what make knows."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.mutate.compile import kbuild_targets
from tests.unit.mutate_fakes import FILE, make_c_tree, object_build

X86_NAME = "arch/x86/kvm/../../../virt/kvm/guest_memfd.o"


def write_cmd(obj: Path, first_line: str) -> None:
    (obj / "virt" / "kvm").mkdir(parents=True, exist_ok=True)
    (obj / "virt" / "kvm" / ".guest_memfd.o.cmd").write_text(f"{first_line}\n\nsource_x := y\n")


def test_targets_from_the_cmd_file(tmp_path: Path) -> None:
    assert kbuild_targets(tmp_path, FILE) == ["virt/kvm/guest_memfd.o"]
    write_cmd(tmp_path, f"savedcmd_{X86_NAME} := ccache gcc -Wp,-MMD,...")
    assert kbuild_targets(tmp_path, FILE) == [X86_NAME, "arch/x86/kvm/", "virt/kvm/guest_memfd.o"]
    # Before 6.2 the variable was cmd_<name>; an object built from its own folder.
    write_cmd(tmp_path, "cmd_virt/kvm/guest_memfd.o := gcc ...")
    assert kbuild_targets(tmp_path, FILE) == ["virt/kvm/guest_memfd.o"]
    with pytest.raises(ValueError):
        kbuild_targets(tmp_path, "virt/kvm/guest_memfd.h")


needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc and make")


@needs_gcc
def test_the_cmd_files_name_is_used_when_make_knows_it(tmp_path: Path) -> None:
    tree = make_c_tree(tmp_path / "src")
    (tree / "arch" / "x86" / "kvm").mkdir(parents=True)  # so ../../.. resolves
    build = object_build(tree, tmp_path / "obj")
    write_cmd(tmp_path / "obj", f"savedcmd_{X86_NAME} := gcc")
    done = build.compile(FILE, tmp_path / "log")
    assert done.ok and build.chosen == {FILE: X86_NAME}
    assert build.object_path(FILE).is_file()


@needs_gcc
def test_a_target_make_has_no_rule_for_falls_back(tmp_path: Path) -> None:
    tree = make_c_tree(tmp_path / "src")
    makefile = tree / "Makefile"
    # This "kbuild" knows objects only by their own folder's name.
    makefile.write_text(
        makefile.read_text().replace(
            "\t@mkdir",
            "\t@case '$@' in *..*) echo \"No rule to make target '$@'\"; exit 2;; esac\n\t@mkdir",
        )
    )
    build = object_build(tree, tmp_path / "obj")
    write_cmd(tmp_path / "obj", f"savedcmd_{X86_NAME} := gcc")
    assert build.compile(FILE, tmp_path / "log").ok
    assert build.chosen == {FILE: "virt/kvm/guest_memfd.o"}
    tried = [
        ln.split()[-1] for ln in (tmp_path / "log").read_text().splitlines() if ln.startswith("$ ")
    ]
    assert tried == [X86_NAME, "arch/x86/kvm/", "virt/kvm/guest_memfd.o"]
    # Later compiles (the mutants') use that target only: one make per mutant.
    assert build.compile(FILE, tmp_path / "log").ok
    assert (tmp_path / "log").read_text().count("$ make") == 1
