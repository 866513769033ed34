"""The mbox source kind end to end on the fake tree: lab.yaml and `--mbox --base`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from harness import build, cli, config, kselftest_build, suites
from harness.errors import TreeError, UserError
from tests.unit.fake_kernel import LAB_FRAGMENT, write_lab
from tests.unit.fake_series import make_series
from tests.unit.test_patchset import GMEM, PRINTK, TEST, unappliable

pytestmark = pytest.mark.usefixtures("lab_cache")


SELFTESTS_MAKEFILE = "tools/testing/selftests/kvm/Makefile"


@pytest.fixture
def series(tree: Path, tmp_path: Path) -> Path:
    makefile = (tree / SELFTESTS_MAKEFILE).read_text()
    listed = makefile.replace(
        "TEST_GEN_PROGS_x86 += pre_fault_memory_test\n",
        "TEST_GEN_PROGS_x86 += pre_fault_memory_test\nTEST_GEN_PROGS_x86 += gmemlab_hello_test\n",
    )
    hello = {TEST: "int main(void) { return 0; }\n", SELFTESTS_MAKEFILE: listed}
    edits = [
        ("KVM: guest_memfd: say hello", {GMEM: PRINTK}),
        ("KVM: selftests: add gmemlab_hello_test", hello),
    ]
    return make_series(tree, edits, tmp_path / "hello.mbox")


def lab_for(tmp_path: Path, tree: Path, box: Path) -> Path:
    kernels = {"dev": {"path": str(tree)}, "hello": {"mbox": {"file": str(box), "base": "dev"}}}
    return write_lab(tmp_path / "lab", kernels, {"lab": LAB_FRAGMENT})


def test_an_mbox_kernel_builds_the_base_with_the_series(
    tmp_path: Path, tree: Path, series: Path, lab_cache: Path
) -> None:
    lab = config.load(lab_for(tmp_path, tree, series))
    b = build.build_kernel(build.prepare_request(lab, "hello", "lab"))
    assert PRINTK in b.vmlinux.read_text()  # the patched file was compiled in
    assert b.build_dir.is_relative_to(lab_cache / "mbox")
    data = json.loads(b.manifest.read_text())
    assert data["source"]["kind"] == "mbox"
    assert [p["status"] for p in data["patches"]] == ["applied", "applied"]
    assert data["patches"][1]["subject"] == "KVM: selftests: add gmemlab_hello_test"
    assert data["source"]["mbox_sha256"] and data["source"]["patches"] == data["patches"]
    assert b.describe.endswith("+2 patches")
    base = build.build_kernel(build.prepare_request(lab, "dev", "lab"))
    assert base.build_dir != b.build_dir and PRINTK not in base.vmlinux.read_text()


def test_a_series_that_does_not_apply_fails_the_build_naming_the_patch(
    tmp_path: Path, tree: Path, series: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.mbox"
    broken.write_text(unappliable(series.read_text()))
    lab_file = lab_for(tmp_path, tree, broken)
    with pytest.raises(TreeError) as err:
        build.prepare_request(config.load(lab_file), "hello", "lab")
    assert [p["status"] for p in err.value.patches] == ["failed", "not-tried"]
    code = cli.main(["--lab", str(lab_file), "build", "--kernel", "hello", "--config", "lab"])
    assert code == 1
    said = capsys.readouterr().err
    assert "patch 1/2 'KVM: guest_memfd: say hello' does not apply" in said
    assert GMEM in said


def test_cli_mbox_and_base_do_the_same_without_lab_yaml(
    tmp_path: Path, tree: Path, series: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lab_file = write_lab(tmp_path / "lab", {"dev": {"path": str(tree)}}, {"lab": LAB_FRAGMENT})
    argv = ["--lab", str(lab_file), "build", "--mbox", str(series), "--base", "dev"]
    assert cli.main(argv) == 0
    manifest = Path(capsys.readouterr().out.strip().splitlines()[-1])
    data = json.loads(manifest.read_text())
    assert data["kernel"] == "hello-on-dev" and len(data["patches"]) == 2


def test_boot_mbox_and_base_boot_the_series_kernel(
    tmp_path: Path, tree: Path, series: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`lab boot --mbox FILE --base NAME` builds the series onto NAME, as lab build does,
    and boots that kernel (the VM itself is not started here)."""
    from harness.commands import boot as boot_command

    booted: list[Path] = []

    class Booted(BaseException):  # past cli.main's handlers
        pass

    def boot(lab: config.LabConfig, bzimage: Path, *args: object, **kwargs: object) -> None:
        booted.append(bzimage)
        raise Booted

    monkeypatch.setattr(boot_command, "boot", boot)
    monkeypatch.setattr(boot_command, "ensure_image", lambda lab: None)
    lab_file = write_lab(tmp_path / "lab", {"dev": {"path": str(tree)}}, {"lab": LAB_FRAGMENT})
    argv = ["--lab", str(lab_file), "boot", "--mbox", str(series), "--base", "dev", "--", "true"]
    with pytest.raises(Booted):
        cli.main(argv)
    (bzimage,) = booted
    (manifest,) = [p / "manifest.json" for p in bzimage.parents if (p / "manifest.json").is_file()]
    data = json.loads(manifest.read_text())
    assert data["kernel"] == "hello-on-dev" and len(data["patches"]) == 2


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["build", "--mbox", "{box}", "--base", "nope"], "--base 'nope': not a kernel"),
        (["build", "--mbox", "/no/such.mbox", "--base", "dev"], "no such file"),
        (["build", "--base", "dev"], "--base needs --mbox"),
        (["run", "--mbox", "{box}", "--manifest", "{box}"], "cannot go with --manifest"),
        (["boot", "--base", "dev"], "--base needs --mbox"),
        (
            ["boot", "--mbox", "{box}", "--bzimage", "{box}"],
            "cannot go with --manifest or --bzimage",
        ),
        (["boot", "--mbox", "{box}", "--base", "nope"], "--base 'nope': not a kernel"),
    ],
)
def test_cli_series_mistakes_exit_3(
    tmp_path: Path,
    tree: Path,
    series: Path,
    args: list[str],
    problem: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lab_file = write_lab(tmp_path / "lab", {"dev": {"path": str(tree)}}, {"lab": LAB_FRAGMENT})
    argv = ["--lab", str(lab_file), *[a.replace("{box}", str(series)) for a in args]]
    assert cli.main(argv) == UserError.exit_code
    assert problem in capsys.readouterr().err


def test_a_selftest_added_to_lab_yaml_is_built_and_pushed(
    tmp_path: Path, tree: Path, series: Path
) -> None:
    """Selftests to build come from lab.yaml's kselftest suites, nothing else."""
    lab_file = lab_for(tmp_path, tree, series)
    data = yaml.safe_load(lab_file.read_text())
    data["suites"]["k"]["tests"].append("gmemlab_hello_test")
    lab_file.write_text(yaml.safe_dump(data))
    lab = config.load(lab_file)
    assert "gmemlab_hello_test" in kselftest_build.wanted(lab)
    b = build.build_kernel(build.prepare_request(lab, "hello", "lab"))
    assert b.selftests["gmemlab_hello_test"] == "built"
    pushed = {name for _, name in suites.payload({"k": lab.suites["k"]}, b, Path("/repo"))}
    assert "selftests/gmemlab_hello_test" in pushed
    # The base does not have it: absent there (the kselftest suite then skips it).
    base = build.build_kernel(build.prepare_request(lab, "dev", "lab"))
    assert base.selftests["gmemlab_hello_test"] == "absent"
