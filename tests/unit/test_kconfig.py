"""Config stage: fragment merge, verification, the Kconfig reader, error messages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness import arch, kconfig, kconfig_tree
from harness.errors import UserError
from harness.source import SourceTree
from harness.source.path import from_path
from tests.unit.fake_kernel import LAB_FRAGMENT, make_tree


@pytest.fixture
def tree(tmp_path: Path) -> SourceTree:
    return from_path("fake", make_tree(tmp_path / "linux"))


def frag(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def configure(tree: SourceTree, tmp_path: Path, *fragments: Path) -> kconfig.KernelConfig:
    return kconfig.configure(tree, "defconfig", fragments, tmp_path / "out", env=dict(os.environ))


def test_parse_config_lines_not_set_is_n_and_later_wins() -> None:
    values = kconfig.parse_config_lines(
        ["CONFIG_A=y", "# CONFIG_B is not set", 'CONFIG_S="x y"', "CONFIG_A=m", "# comment"]
    )
    assert values == {"A": "m", "B": "n", "S": '"x y"'}


def test_lab_fragment_lands(tree: SourceTree, tmp_path: Path) -> None:
    cfg = configure(tree, tmp_path, frag(tmp_path, "lab.config", LAB_FRAGMENT))
    assert cfg.ok, cfg.mismatches
    assert cfg.requested == 4
    assert cfg.unknown_symbols == ()
    assert "CONFIG_KVM_SW_PROTECTED_VM=y" in cfg.path.read_text()
    assert len(cfg.hash) == 64
    assert (cfg.path.parent / "verification.json").is_file()


def test_tdx_without_host_dependencies_fails_naming_symbol(
    tree: SourceTree, tmp_path: Path
) -> None:
    # KVM_INTEL_TDX needs INTEL_TDX_HOST, which needs X86_MCE: nothing asks for them.
    cfg = configure(tree, tmp_path, frag(tmp_path, "tdx.config", "CONFIG_KVM_INTEL_TDX=y\n"))
    assert not cfg.ok
    (m,) = cfg.mismatches
    assert (m.symbol, m.requested, m.actual) == ("KVM_INTEL_TDX", "y", "n")
    assert m.unmet is not None
    assert "INTEL_TDX_HOST [=n]" in m.unmet
    # One level deeper: why INTEL_TDX_HOST itself is off.
    assert "X86_MCE [=n]" in m.unmet
    with pytest.raises(UserError) as err:
        kconfig.require_verified(cfg, tree)
    text = err.value.message
    assert "CONFIG_KVM_INTEL_TDX: requested y, got n" in text
    assert "tdx.config" in text
    assert "INTEL_TDX_HOST" in text


def test_tdx_with_dependencies_lands(tree: SourceTree, tmp_path: Path) -> None:
    text = "CONFIG_X86_MCE=y\nCONFIG_INTEL_TDX_HOST=y\nCONFIG_KVM_INTEL_TDX=y\n"
    assert configure(tree, tmp_path, frag(tmp_path, "tdx.config", text)).ok


def test_symbol_unknown_to_tree_asked_off_is_reported_not_failed(
    tree: SourceTree, tmp_path: Path
) -> None:
    # sw-protected.config on mainline: "is not set" for a series-only symbol is met.
    text = "# CONFIG_KVM_VM_MEMORY_ATTRIBUTES is not set\n# CONFIG_SERIES_ONLY is not set\n"
    cfg = configure(tree, tmp_path, frag(tmp_path, "sw.config", text))
    assert cfg.ok
    assert cfg.unknown_symbols == ("KVM_VM_MEMORY_ATTRIBUTES", "SERIES_ONLY")
    assert cfg.verification()["unknown_to_tree"] == ["KVM_VM_MEMORY_ATTRIBUTES", "SERIES_ONLY"]
    kconfig.require_verified(cfg, tree)


def test_symbol_unknown_to_tree_asked_on_fails_the_config_stage_as_bad_input(
    tree: SourceTree, tmp_path: Path
) -> None:
    """vm-attributes.config on mainline: the tree cannot provide the symbol, so a build
    would test another configuration than the one named. Not infrastructure (exit 2: a
    retry cannot help) and not a test failure (exit 1): lab.yaml pairs this config set
    with a kernel that lacks the symbol, or the fragment misspells it (exit 3)."""
    text = "# CONFIG_KVM_VM_MEMORY_ATTRIBUTES is not set\nCONFIG_SERIES_ONLY=y\n"
    cfg = configure(tree, tmp_path, frag(tmp_path, "vm-attributes.config", text))
    assert not cfg.ok
    assert cfg.unknown_symbols == ("KVM_VM_MEMORY_ATTRIBUTES", "SERIES_ONLY")
    assert cfg.missing_symbols == ("SERIES_ONLY", "KVM_VM_MEMORY_ATTRIBUTES")
    with pytest.raises(UserError) as err:
        kconfig.require_verified(cfg, tree)
    assert err.value.exit_code == 3
    text = err.value.message
    assert "CONFIG_SERIES_ONLY: requested y, but" in text and "does not define it" in text
    assert "vm-attributes.config" in text and tree.describe in text
    assert "a kernel that has it" in text and "KVM_VM_MEMORY_ATTRIBUTES" not in text


def test_an_unknown_symbol_that_landed_is_not_an_error(
    tree: SourceTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reader can miss a definition (a `source` it cannot expand); Kconfig drops
    # what it does not define, so a symbol in the final .config as asked is known.
    real = kconfig_tree.load

    def blind(srctree: Path) -> kconfig_tree.KconfigTree:
        found = real(srctree)
        return kconfig_tree.KconfigTree(
            {k: v for k, v in found.definitions.items() if k != "KVM_AMD"}
        )

    monkeypatch.setattr(kconfig_tree, "load", blind)
    cfg = configure(tree, tmp_path, frag(tmp_path, "lab.config", LAB_FRAGMENT))
    assert cfg.ok and cfg.unknown_symbols == ("KVM_AMD",)


def test_lab_build_exits_3_when_the_tree_lacks_a_requested_symbol(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from harness import cli
    from tests.unit.fake_kernel import write_lab

    monkeypatch.setenv("LAB_CACHE", str(tmp_path / "cache"))
    linux = make_tree(tmp_path / "linux")
    lab = write_lab(tmp_path / "lab", {"dev": {"path": str(linux)}}, {"va": "CONFIG_NOPE=y\n"})
    assert cli.main(["--lab", str(lab), "build", "--config-only"]) == 3
    err = capsys.readouterr().err
    assert "CONFIG_NOPE: requested y, but" in err and "va.config" in err


def test_not_set_request_for_known_symbol_is_checked(tree: SourceTree, tmp_path: Path) -> None:
    # KVM is in defconfig; asking for n must land as n (absent or "is not set").
    cfg = configure(tree, tmp_path, frag(tmp_path, "nokvm.config", "# CONFIG_KVM is not set\n"))
    assert cfg.ok
    assert "CONFIG_KVM=y" not in cfg.path.read_text()


def test_later_fragment_overrides_earlier(tree: SourceTree, tmp_path: Path) -> None:
    a = frag(tmp_path, "a.config", LAB_FRAGMENT)
    b = frag(tmp_path, "b.config", "# CONFIG_KVM_AMD is not set\n")
    cfg = configure(tree, tmp_path, a, b)
    assert cfg.ok, cfg.mismatches
    assert "CONFIG_KVM_AMD=y" not in cfg.path.read_text()


def test_unchanged_inputs_reuse_config(tree: SourceTree, tmp_path: Path) -> None:
    f = frag(tmp_path, "lab.config", LAB_FRAGMENT)
    first = configure(tree, tmp_path, f)
    mtime = first.path.stat().st_mtime_ns
    again = configure(tree, tmp_path, f)
    assert again.path.stat().st_mtime_ns == mtime
    assert again.hash == first.hash
    f.write_text(LAB_FRAGMENT + "# CONFIG_KVM_AMD is not set\n")
    changed = configure(tree, tmp_path, f)
    assert changed.hash != first.hash


def test_missing_fragment_is_user_error(tree: SourceTree, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"nope\.config not found"):
        configure(tree, tmp_path, tmp_path / "nope.config")


def test_inputs_key_depends_on_fragment_content(tree: SourceTree, tmp_path: Path) -> None:
    f = frag(tmp_path, "lab.config", "CONFIG_KVM=y\n")
    k1 = kconfig.inputs_key(tree, "defconfig", (f,))
    f.write_text("CONFIG_KVM=m\n")
    assert kconfig.inputs_key(tree, "defconfig", (f,)) != k1
    assert kconfig.inputs_key(tree, "tinyconfig", (f,)) != kconfig.inputs_key(
        tree, "defconfig", (f,)
    )


# --- the Kconfig reader --------------------------------------------------------------


def test_reader_follows_source_if_blocks_and_skips_help(tmp_path: Path) -> None:
    kt = kconfig_tree.load(make_tree(tmp_path / "linux"))
    assert kt.knows("KVM_SW_PROTECTED_VM")
    assert kt.knows("X86_MCE")  # via source "arch/$(SRCARCH)/Kconfig"
    assert not kt.knows("NOT_A_SYMBOL")  # inside help text
    (d,) = kt.definitions["KVM_SW_PROTECTED_VM"]
    assert d.conditions == ["VIRTUALIZATION", "KVM", "EXPERT"]
    assert d.has_prompt
    assert not kt.definitions["CONTIG_ALLOC"][0].has_prompt


def test_reader_expands_arch_variables_for_the_lab_arch() -> None:
    wanted = dict.fromkeys(("SRCARCH", "ARCH", "HEADER_ARCH"), arch.HOST.kbuild_arch)
    assert wanted == kconfig_tree.ARCH_VARS


def test_explain_names_enclosing_if(tmp_path: Path) -> None:
    kt = kconfig_tree.load(make_tree(tmp_path / "linux"))
    text = kt.explain("KVM", {"VIRTUALIZATION": "n"})
    assert text is not None and "VIRTUALIZATION [=n]" in text


def test_explain_promptless_symbol_shows_how_it_is_computed(tmp_path: Path) -> None:
    kt = kconfig_tree.load(make_tree(tmp_path / "linux"))
    text = kt.explain("CONTIG_ALLOC", {})
    assert text is not None
    assert "cannot be asked for directly" in text and "X86_MCE [=n] || CMA [=n]" in text


@pytest.mark.parametrize(
    ("expr", "values", "expected"),
    [
        ("A && B", {"A": "y", "B": "y"}, 2),
        ("A && B", {"A": "y", "B": "m"}, 1),
        ("A || !B", {}, 2),
        ("!(A || B)", {"A": "y"}, 0),
        ("X86_64 && (CPU_SUP_INTEL || CPU_SUP_AMD)", {"X86_64": "y", "CPU_SUP_AMD": "y"}, 2),
        ('S = "abc"', {"S": '"abc"'}, 2),
        ("N >= 4", {"N": "8"}, 2),
        ("A != n", {"A": "m"}, 2),
        ("$(cc-option,-mfoo)", {}, None),
        ("A &&", {"A": "y"}, None),
    ],
)
def test_evaluate(expr: str, values: dict[str, str], expected: int | None) -> None:
    assert kconfig_tree.evaluate(expr, values) == expected


def test_annotate() -> None:
    assert kconfig_tree.annotate("A && !B", {"A": "y"}) == "A [=y] && !B [=n]"


def test_local_tree_config_key_ignores_c_edits_but_not_kconfig(tmp_path: Path) -> None:
    import time

    root = make_tree(tmp_path / "linux", git=True)
    f = frag(tmp_path, "lab.config", LAB_FRAGMENT)
    key = kconfig.inputs_key(from_path("dev", root), "defconfig", (f,))
    (root / "virt/kvm/guest_memfd.c").write_text("/* edited */\n")
    assert kconfig.inputs_key(from_path("dev", root), "defconfig", (f,)) == key
    later = time.time() + 5
    os.utime(root / "virt/kvm/Kconfig", (later, later))
    assert kconfig.inputs_key(from_path("dev", root), "defconfig", (f,)) != key
