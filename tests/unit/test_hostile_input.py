"""Hostile lab.yaml values (issue 15): each is refused at load, by `lab` with exit 3 and
a message naming the key path and the expected form, before anything runs."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import cli, config, source
from harness.config import GitSource
from harness.errors import UserError


def base_lab() -> dict[str, Any]:
    return {
        "kernels": {
            "series": {"git": {"url": "https://git.example/linux.git", "ref": "main"}},
            "mainline": {"deb": {"package": "linux-source-7.3", "suite": "trixie-backports"}},
        },
        "configs": {"lab": {"fragments": ["lab.config"]}},
        "image": {"recipe": "trixie"},
        "suites": {"gmem-ioctl": {"kind": "pytest", "path": "tests/guest"}},
        "hosts": {"tdx-1": {"ssh": "tdx-1.lab.example"}},
        "defaults": {"kernel": "series", "config": "lab", "suites": ["gmem-ioctl"]},
        "matrix": {"nightly": {"kernels": ["series"], "configs": ["lab"]}},
    }


def put(data: dict[str, Any], dotted: str, value: object) -> None:
    *parents, last = dotted.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value


def rename(data: dict[str, Any], section: str, old: str, new: str) -> None:
    data[section][new] = data[section].pop(old)


def lab_dir(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "kernel-config").mkdir(parents=True, exist_ok=True)
    (root / "kernel-config" / "lab.config").write_text("CONFIG_KVM=y\n")
    (root / "images" / "trixie").mkdir(parents=True, exist_ok=True)
    return root


def run_lab(tmp_path: Path, data: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> str:
    """`lab --lab FILE build --config-only` on data: asserts exit 3, returns stderr."""
    path = lab_dir(tmp_path) / "lab.yaml"
    path.write_text(yaml.safe_dump(data))
    code = cli.main(["--lab", str(path), "build", "--config-only"])
    err = capsys.readouterr().err
    assert code == 3, err
    assert "Traceback" not in err
    assert str(path) in err
    assert "fix lab.yaml at the keys named" in err
    return err


# (the key changed, its hostile value[, the key path the message must name where that is
# not the changed key itself])
VALUES: list[tuple[str, object] | tuple[str, object, str]] = [
    # git URLs: options, other transports, credentials
    ("kernels.series.git.url", "--upload-pack=touch /tmp/x;false"),
    ("kernels.series.git.url", "-oProxyCommand=id"),
    ("kernels.series.git.url", "ext::sh -c touch% /tmp/x"),
    ("kernels.series.git.url", "ext::sh"),
    ("kernels.series.git.url", "fd::17"),
    ("kernels.series.git.url", "http://git.example/linux.git"),
    ("kernels.series.git.url", "ftp://git.example/linux.git"),
    ("kernels.series.git.url", "https://user:secret@git.example/l.git"),
    ("kernels.series.git.url", "ssh://-oProxyCommand=id/x"),
    ("kernels.series.git.url", "ssh://git.example:99999/x"),
    ("kernels.series.git.url", "-x@host:path"),
    ("kernels.series.git.url", "relative/path"),
    ("kernels.series.git.url", "file://remote.example/x"),
    ("kernels.series.git.url", "https://git.example/a b"),
    # git refs: options, refspecs, revision syntax
    ("kernels.series.git.ref", "--upload-pack=touch /tmp/x"),
    ("kernels.series.git.ref", "main:refs/heads/x"),
    ("kernels.series.git.ref", "main..evil"),
    ("kernels.series.git.ref", "HEAD~1"),
    ("kernels.series.git.base", "-n"),
    # deb: sources.list options, folder names, a keyring outside [signed-by=...]
    ("kernels.mainline.deb.suite", "../../x"),
    ("kernels.mainline.deb.suite", "trixie [trusted=yes]"),
    ("kernels.mainline.deb.suite", "-o"),
    ("kernels.mainline.deb.package", "linux-source-7.3=1.0"),
    ("kernels.mainline.deb.package", "-oAPT::x"),
    ("kernels.mainline.deb.mirror", "[trusted=yes] http://evil.example/d", "deb.mirror"),
    ("kernels.mainline.deb.mirror", "http://m.example/debian trixie main", "deb.mirror"),
    ("kernels.mainline.deb.mirror", "http://m.example/d\ndeb http://evil/ x main", "deb.mirror"),
    ("kernels.mainline.deb.mirror", "ftp://m.example/debian", "deb.mirror"),
    ("kernels.mainline.deb.mirror", "http://m.example/debian\n", "deb.mirror"),
    ("kernels.mainline.deb.suite", "trixie\n"),
    ("kernels.mainline.deb.keyring", "/k.gpg] [trusted=yes"),
    ("kernels.mainline.deb.keyring", "relative.gpg"),
    # image: mmdebstrap's positional words, the recipe folder
    ("image.recipe", "../../etc"),
    ("image.recipe", "/etc"),
    ("image.suite", "--setup-hook=touch /tmp/x"),
    ("image.mirror", "deb [trusted=yes] http://evil.example/ x main"),
    ("image.mirror", "--hook-dir=/tmp"),
    # paths that must stay inside the repository
    ("configs.lab.fragments", ["../../../etc/passwd"], "configs.lab.fragments[0]"),
    ("configs.lab.fragments", ["/etc/passwd"], "configs.lab.fragments[0]"),
    ("configs.lab.fragments", ["-lab.config"], "configs.lab.fragments[0]"),
    ("suites.gmem-ioctl.path", "../../../home"),
    ("suites.gmem-ioctl.path", "/etc"),
    ("suites.gmem-ioctl.path", "--co"),
    ("suites.gmem-ioctl.path", "tests/../../x"),
    # make: a variable assignment or an option instead of a config target
    ("configs.lab.base", "CC=touch /tmp/x"),
    ("configs.lab.base", "-j1000"),
    # hosts: ssh options, remote folders
    ("hosts.tdx-1.ssh", "-oProxyCommand=touch /tmp/x"),
    ("hosts.tdx-1.ssh", "host -p 2222"),
    ("hosts.tdx-1.workdir", "/var/tmp/$(reboot)"),
    ("hosts.tdx-1.workdir", "relative"),
    ("hosts.tdx-1.capabilities", ["../x"], "hosts.tdx-1.capabilities[0]"),
    # vm.qemu: never an option
    ("vm.qemu", "-display"),
    ("vm.qemu", "../qemu"),
]

CASES = [(key, value, named[0] if named else key) for key, value, *named in VALUES]


@pytest.mark.parametrize(("key", "value", "named"), CASES, ids=[f"{k}={v!r}" for k, v, _ in CASES])
def test_hostile_value_is_refused_at_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str, value: object, named: str
) -> None:
    data = copy.deepcopy(base_lab())
    put(data, key, value)
    err = run_lab(tmp_path, data, capsys)
    assert named in err


# Names become folder names (results/<run>/<cell>/<suite>, cache folders, latest- links):
# section -> (the entry renamed, its hostile new names). re's "$" matches before a final
# newline: hence "series\n".
NAMES = {
    "kernels": ("series", ["../../escape", "/abs", "-rf", ".hidden", "a b", "x" * 65, "series\n"]),
    "configs": ("lab", ["../x"]),
    "suites": ("gmem-ioctl", ["../../../x", "a/b"]),
    "hosts": ("tdx-1", ["..;reboot"]),
    "matrix": ("nightly", ["../n"]),
}
RENAMES = [(section, old, new) for section, (old, news) in NAMES.items() for new in news]


@pytest.mark.parametrize(
    ("section", "old", "new"), RENAMES, ids=[f"{s}.{n!r}" for s, _, n in RENAMES]
)
def test_hostile_name_is_refused_at_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], section: str, old: str, new: str
) -> None:
    data = copy.deepcopy(base_lab())
    rename(data, section, old, new)
    err = run_lab(tmp_path, data, capsys)
    assert f"{section}[{new!r}] (the name)" in err
    assert "not a safe name" in err


def test_upload_pack_url_runs_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "pwned"
    data = base_lab()
    data["kernels"]["series"]["git"]["url"] = f"--upload-pack=touch {marker};false"

    def no_process(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a process was started: {args}")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    err = run_lab(tmp_path, data, capsys)
    assert "kernels.series.git.url" in err and "would be read as an option" in err
    assert not marker.exists()


# --- defence in depth: a value that got past the load check (built in code) ---------


@pytest.mark.parametrize(
    "url", ["--upload-pack=touch {marker};false", "ext::sh -c touch% {marker}"]
)
def test_git_never_takes_a_url_as_an_option_or_runs_a_transport_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("LAB_CACHE", str(tmp_path / "cache"))
    # A user's git config that would allow ext:: must not matter (GIT_ALLOW_PROTOCOL).
    gitconfig = tmp_path / "gitconfig"
    gitconfig.write_text("[protocol]\n\tallow = always\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(gitconfig))
    marker = tmp_path / "pwned"
    spec = GitSource.model_construct(url=url.format(marker=marker), ref="main")
    with pytest.raises(UserError):
        source.git.from_git("series", spec)
    assert not marker.exists()


def test_git_environment_allows_only_the_lab_schemes() -> None:
    env = source.git.git_env()
    assert env["GIT_ALLOW_PROTOCOL"] == "https:ssh:git:file"
    assert env["GIT_TERMINAL_PROMPT"] == "0"


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/googleprodkernel/linux-cc.git",
        "https://git.example:8443/linux.git",
        "https://[::1]:8443/linux.git",
        "ssh://git@git.example/linux.git",
        "ssh://git.example:2222/linux.git",
        "git://git.example/linux.git",
        "file:///srv/git/linux.git",
        "git@git.example:kernel/linux.git",
        "git.example:linux.git",
        "/srv/git/linux",
    ],
)
def test_ordinary_git_urls_are_accepted(url: str) -> None:
    assert GitSource(url=url, ref="guest_memfd-inplace-conversion-v3").url == url


def test_ordinary_values_are_accepted(tmp_path: Path) -> None:
    data = base_lab()
    data["kernels"]["mainline"]["deb"]["mirror"] = "https://mirror.example:8443/debian/"
    data["image"]["mirror"] = "file:///srv/mirror/debian"
    data["configs"]["lab"]["base"] = "x86_64_defconfig"
    data["suites"]["ks"] = {"kind": "kselftest", "tests": ["x86/private_mem_conversions_test"]}
    data["hosts"]["tdx-1"]["ssh"] = "lab@tdx-1.lab.example"
    data["vm"] = {"qemu": "/opt/qemu-10/bin/qemu-system-x86_64"}
    path = lab_dir(tmp_path) / "lab.yaml"
    path.write_text(yaml.safe_dump(data))
    lab = config.load(path)
    assert lab.kernels["series"].git is not None


@pytest.mark.parametrize("where", ["fragment", "recipe", "suite-path"])
def test_symlinks_out_of_the_repository_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    root = lab_dir(tmp_path)
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "secret.config").write_text("CONFIG_X=y\n")
    data = base_lab()
    if where == "fragment":
        (root / "kernel-config" / "evil.config").symlink_to(outside / "secret.config")
        data["configs"]["lab"]["fragments"] = ["lab.config", "evil.config"]
        named = "configs.lab.fragments: 'evil.config' leads outside"
    elif where == "recipe":
        (root / "images" / "evil").symlink_to(outside / "dir")
        data["image"]["recipe"] = "evil"
        named = "image.recipe: 'evil' leads outside"
    else:
        (root / "tests").mkdir()
        (root / "tests" / "evil").symlink_to(outside / "dir")
        data["suites"]["gmem-ioctl"]["path"] = "tests/evil"
        named = "suites.gmem-ioctl.path: 'tests/evil' leads outside"
    err = run_lab(tmp_path, data, capsys)
    assert named in err
