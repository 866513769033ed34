"""Build stage against the fake tree: cache keys, no-op rebuilds, selftest statuses,
manifest contents, the CLI's last line. The stage's pieces have their own files:
test_hostcheck, test_kmake, test_manifest, test_ccache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

import pytest

from harness import build, cli, config, kmake, kselftest_build
from harness.errors import InfraError, TreeError, UserError
from harness.paths import cache_dir, cache_root
from harness.source import prepare_source
from harness.source.path import from_path
from tests.unit.fake_kernel import LAB_FRAGMENT, elf, make_tree, write_lab

pytestmark = pytest.mark.usefixtures("lab_cache")


@pytest.fixture
def lab_file(tmp_path: Path, tree: Path) -> Path:
    fragments = {"lab": LAB_FRAGMENT, "tdx": "CONFIG_KVM_INTEL_TDX=y\n"}
    return write_lab(tmp_path / "lab", {"dev": {"path": str(tree)}}, fragments)


def compiles(b: build.KernelBuild) -> int:
    return len((b.build_dir / "obj" / "compile-count").read_text().splitlines())


def build_kernel(lab: config.LabConfig, kernel: str, config_name: str) -> build.KernelBuild:
    return build.build_kernel(build.prepare_request(lab, kernel, config_name))


E = TypeVar("E", bound=Exception)


def failed_build(lab_file: Path, tree: Path, gmem_source: str, raises: type[E]) -> E:
    """Build `dev` once guest_memfd.c holds gmem_source (the fake compiler fails on BROKEN
    with a compile error, on NOSPACE with a full disk); the error it raised."""
    (tree / "virt/kvm/guest_memfd.c").write_text(gmem_source)
    with pytest.raises(raises) as err:
        build_kernel(config.load(lab_file), "dev", "lab")
    return err.value


def lab_build(lab_file: Path, config_name: str = "lab") -> int:
    """`lab build --kernel dev --config CONFIG_NAME`'s exit code."""
    return cli.main(["--lab", str(lab_file), "build", "--kernel", "dev", "--config", config_name])


def test_build_produces_artifacts_selftests_and_manifest(lab_file: Path, tree: Path) -> None:
    lab = config.load(lab_file)
    b = build_kernel(lab, "dev", "lab")
    for p in (b.bzimage, b.vmlinux, b.system_map, b.config, b.manifest):
        assert p.is_file(), p
    assert b.selftests == {
        "guest_memfd_test": "built",
        "guest_memfd_conversions_test": "absent",
        "x86/private_mem_conversions_test": "built",
        "x86/private_mem_kvm_exits_test": "failed",
        "pre_fault_memory_test": "built",
    }
    assert (b.selftests_dir / "x86" / "private_mem_conversions_test").is_file()
    assert not (b.selftests_dir / "x86" / "private_mem_kvm_exits_test").exists()
    assert b.driver == "x86/private_mem_conversions_test.sh"
    assert (b.selftests_dir / b.driver).stat().st_mode & 0o111

    data = json.loads(b.manifest.read_text())
    assert data["status"] == "ok"
    assert data["source"]["commit"] == b.commit and data["source"]["dirty"] is False
    assert data["config"]["hash"] == b.config_hash
    assert data["config"]["verification"]["ok"] is True
    assert [f["name"] for f in data["config"]["fragments"]] == ["lab.config"]
    bz = data["artifacts"]["bzImage"]
    assert bz["size"] == b.bzimage.stat().st_size and len(bz["sha256"]) == 64
    failed = data["selftests"]["x86/private_mem_kvm_exits_test"]
    assert "error: boom" in failed["log_excerpt"]
    assert len(data["selftests"]["guest_memfd_test"]["sha256"]) == 64
    assert set(data["durations_s"]) >= {"source", "config", "kernel", "headers", "selftests"}
    assert "hit_rate" in data["ccache"] or data["ccache"] == {"available": False}
    assert data["compiler"]
    assert data["reproduce"]["lab"] == "lab build --kernel dev --config lab"
    assert "KBUILD_BUILD_TIMESTAMP" in data["reproduce"]["make"]

    loaded = build.load_build(b.manifest)
    assert loaded.bzimage == b.bzimage and loaded.selftests == b.selftests
    assert loaded.selftests_dir == b.selftests_dir and loaded.config_hash == b.config_hash


def test_stage_takes_a_request_by_value(tmp_path: Path, tree: Path) -> None:
    # No lab.yaml: a tree, a base target, fragment files and a job count are enough.
    frag = tmp_path / "lab.config"
    frag.write_text(LAB_FRAGMENT)
    request = build.BuildRequest(
        kernel="dev",
        config_name="lab",
        tree=from_path("dev", tree),
        base="defconfig",
        fragments=(frag,),
        jobs=1,
        selftests=("guest_memfd_test",),
    )
    b = build.build_kernel(request)
    assert b.bzimage.is_file() and b.selftests["guest_memfd_test"] == "built"
    assert b.make_seconds > 0 and b.durations["source"] == 0.0
    assert " -j1 " in json.loads(b.manifest.read_text())["reproduce"]["make"]


def test_second_build_is_a_noop_and_an_edit_rebuilds(lab_file: Path, tree: Path) -> None:
    lab = config.load(lab_file)
    first = build_kernel(lab, "dev", "lab")
    assert compiles(first) == 1
    again = build_kernel(lab, "dev", "lab")
    assert again.build_dir == first.build_dir
    assert compiles(again) == 1  # nothing rebuilt

    # An edit in a developer's tree rebuilds incrementally in the same folder, and the
    # manifest records the tree as dirty with the diff's hash.
    (tree / "virt/kvm/guest_memfd.c").write_text("/* edited */\n")
    edited = build_kernel(lab, "dev", "lab")
    assert edited.dirty and edited.build_dir == first.build_dir
    assert compiles(edited) == 2
    data = json.loads(edited.manifest.read_text())
    assert data["source"]["dirty"] is True and data["source"]["diff_sha256"]


def test_ccache_figures_count_only_this_build(lab_file: Path, tree: Path) -> None:
    # The cache is shared: a compile by another build while this make runs (the fake
    # tree's concurrent.c) reaches the cache but must not reach this build's manifest.
    lab = config.load(lab_file)

    def cc(b: build.KernelBuild) -> dict[str, object]:
        data: dict[str, object] = json.loads(b.manifest.read_text())["ccache"]
        return data

    first = build_kernel(lab, "dev", "lab")
    assert (cc(first)["hits"], cc(first)["misses"]) == (0, 1)  # guest_memfd.c, cold cache
    noop = build_kernel(lab, "dev", "lab")
    assert (cc(noop)["misses"], cc(noop)["hit_rate"]) == (0, "n/a (nothing compiled)")

    (tree / "concurrent.c").write_text("int other_build;\n")
    # Code, not a comment: a comment-only edit preprocesses alike and would be a hit.
    (tree / "virt/kvm/guest_memfd.c").write_text("int edited;\n")
    edited = build_kernel(lab, "dev", "lab")
    assert (edited.build_dir / "obj" / "concurrent.o").is_file()  # the other compile ran
    assert (cc(edited)["hits"], cc(edited)["misses"]) == (0, 1)
    assert cc(edited)["cache_size_kib"] is not None


def test_up_to_date_check_sees_edits_and_changed_settings(lab_file: Path, tree: Path) -> None:
    import os
    import time

    b = build_kernel(config.load(lab_file), "dev", "lab")
    obj, stamp = b.build_dir / "obj", b.build_dir / "obj" / kmake.STAMP
    text = stamp.read_text()
    assert kmake.kernel_up_to_date(tree, obj, stamp, text)
    assert not kmake.kernel_up_to_date(tree, obj, stamp, text + " ")
    later = time.time() + 5
    os.utime(tree / "virt/kvm/guest_memfd.c", (later, later))
    assert not kmake.kernel_up_to_date(tree, obj, stamp, text)


def test_failed_build_leaves_a_failed_manifest(lab_file: Path, tree: Path) -> None:
    good = build_kernel(config.load(lab_file), "dev", "lab")
    err = failed_build(lab_file, tree, "BROKEN\n", TreeError)
    assert "error: x" in err.message  # the compiler's line is quoted
    data = json.loads(good.manifest.read_text())
    assert data["status"] == "failed" and data["failed_phase"] == "kernel"
    assert data["failure"]["tree"] is True
    assert data["source"]["dirty"] is True
    with pytest.raises(UserError, match="not a finished build"):
        build.load_build(good.manifest)


def test_a_tree_that_does_not_compile_is_a_finding(
    lab_file: Path, tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = failed_build(lab_file, tree, "BROKEN\n", TreeError)
    assert err.exit_code == 1
    (finding,) = err.findings
    assert (finding.suite, finding.name) == ("build", "kernel")
    assert finding.excerpt.splitlines()[0] == "guest_memfd.c:1: error: x"
    assert finding.log is not None and "error: x" in finding.log.read_text()
    # `lab build`: exit 1 (a finding), the compiler's line in its message.
    assert lab_build(lab_file) == 1
    assert "guest_memfd.c:1: error: x" in capsys.readouterr().err


def test_a_full_disk_during_make_stays_an_infrastructure_error(
    lab_file: Path, tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = failed_build(lab_file, tree, "NOSPACE\n", InfraError)
    assert not isinstance(err, TreeError)
    assert lab_build(lab_file) == 2


def test_git_source_builds_key_on_commit(tmp_path: Path, tree: Path) -> None:
    kernels = {"series": {"git": {"url": tree.as_uri(), "ref": "main"}}}
    lab = config.load(write_lab(tmp_path / "glab", kernels, {"lab": LAB_FRAGMENT}))
    b = build_kernel(lab, "series", "lab")
    assert b.commit == prepare_source(lab, "series").commit
    assert b.bzimage.is_file() and not b.dirty


def test_build_folders_share_one_depth(lab_file: Path) -> None:
    # CCACHE_BASEDIR makes paths relative to the build folder: equal depth => cache hits.
    lab = config.load(lab_file)
    b = build_kernel(lab, "dev", "lab")
    assert b.build_dir.parent == cache_dir("builds")
    env = kmake.build_env()
    assert env["CCACHE_BASEDIR"] == str(cache_root())
    assert env["CCACHE_DIR"].startswith(str(cache_root()))
    assert env["KBUILD_BUILD_TIMESTAMP"] and env["KBUILD_BUILD_USER"] == "gmemlab"


def test_config_that_does_not_land_fails_before_building(lab_file: Path) -> None:
    lab = config.load(lab_file)
    with pytest.raises(UserError) as err:
        build_kernel(lab, "dev", "tdx")
    assert "CONFIG_KVM_INTEL_TDX" in err.value.message
    assert not list(cache_dir("builds").iterdir())


def test_unknown_config_set(lab_file: Path) -> None:
    with pytest.raises(UserError, match="unknown config set 'nope'"):
        build.prepare_request(config.load(lab_file), "dev", "nope")
    with pytest.raises(UserError, match="unknown config set 'nope'"):
        build.configure_kernel(config.load(lab_file), "dev", "nope")


def test_cli_last_line_is_manifest_path(lab_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert lab_build(lab_file) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].endswith("manifest.json") and Path(out[-1]).is_file()
    assert any("bzImage:" in line for line in out)
    assert any("full make log:" in line for line in out)


def test_cli_config_failure_exit_code(lab_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert lab_build(lab_file, "tdx") == 3
    assert "CONFIG_KVM_INTEL_TDX" in capsys.readouterr().err


# --- pieces --------------------------------------------------------------------------


def test_static_elf_check(tmp_path: Path) -> None:
    good, dyn, arm = tmp_path / "good", tmp_path / "dyn", tmp_path / "arm"
    good.write_bytes(elf())
    dyn.write_bytes(elf(interp=True))
    arm.write_bytes(elf(machine=183))
    assert kselftest_build.static_x86_64_problem(good) is None
    assert "dynamically linked" in (kselftest_build.static_x86_64_problem(dyn) or "")
    assert "not x86-64" in (kselftest_build.static_x86_64_problem(arm) or "")
    (tmp_path / "txt").write_text("#!/bin/sh\n")
    assert "not a 64-bit ELF" in (kselftest_build.static_x86_64_problem(tmp_path / "txt") or "")


def test_older_trees_x86_64_folder(tmp_path: Path) -> None:
    kdir = tmp_path / "kvm"
    (kdir / "x86_64").mkdir(parents=True)
    assert kselftest_build.tree_name(kdir, "x86/foo_test") == "x86_64/foo_test"
    (kdir / "x86").mkdir()
    assert kselftest_build.tree_name(kdir, "x86/foo_test") == "x86/foo_test"


def test_cache_lock_serialises_two_holders(tmp_path: Path) -> None:
    import threading
    import time

    from harness.cachelock import locked

    order: list[str] = []
    lock = tmp_path / "x.lock"

    def second() -> None:
        with locked(lock, "test"):
            order.append("second")

    with locked(lock, "test"):
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.3)
        order.append("first")
    t.join(5)
    assert order == ["first", "second"]


def test_run_logged_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    import os
    import time

    from harness.proc import run_logged

    script = "sleep 60 & echo child $!; while :; do echo tick; sleep 0.1; done"
    log = tmp_path / "log"
    with pytest.raises(InfraError, match="timed out"):
        run_logged(["sh", "-c", script], log=log, label="t", timeout=0.5)
    child = int(
        next(ln for ln in log.read_text().splitlines() if ln.startswith("child")).split()[1]
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        # A zombie still answers kill(0): it is dead if its state is Z.
        stat = Path(f"/proc/{child}/stat")
        if stat.exists() and stat.read_text().split()[2] == "Z":
            return
        time.sleep(0.1)
    pytest.fail("the command's background child survived the timeout")


def test_a_tree_at_a_path_kbuild_refuses_builds_from_a_mirror(
    tmp_path: Path, lab_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Spaces, a comma and '..' in --kernel: kbuild cannot build from such a folder,
    so the lab builds from an rsync mirror under the cache; nothing lands elsewhere."""
    real = make_tree(tmp_path / "my tree, v1" / "linux", git=True)
    hostile = f"{tmp_path}/my tree, v1/../my tree, v1/linux"
    lab_file = write_lab(tmp_path / "lab", {"dev": {"path": str(real)}}, {"lab": LAB_FRAGMENT})
    before = sorted(p.name for p in real.parent.iterdir())
    assert cli.main(["--lab", str(lab_file), "build", "--kernel", hostile]) == 0
    manifest = Path(capsys.readouterr().out.strip().splitlines()[-1])
    data = json.loads(manifest.read_text())
    assert data["source"]["origin"] == str(real) and data["source"]["kind"] == "path"
    assert Path(data["source"]["path"]).is_relative_to(lab_cache / "sources" / "mirrors")
    assert manifest.is_relative_to(lab_cache / "builds")
    assert " " not in manifest.parent.name and "," not in manifest.parent.name
    assert sorted(p.name for p in real.parent.iterdir()) == before  # nothing written there
    # An edit in the real tree reaches the next build through the mirror.
    (real / "virt/kvm/guest_memfd.c").write_text("/* edited */\n")
    assert cli.main(["--lab", str(lab_file), "build", "--kernel", hostile]) == 0
    again = build.load_build(Path(capsys.readouterr().out.strip().splitlines()[-1]))
    assert "/* edited */" in again.vmlinux.read_text() and again.dirty
