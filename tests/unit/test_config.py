"""lab.yaml validation: the shipped file loads; mistakes name the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness import config
from harness.errors import UserError


def write_lab(tmp_path: Path, data: dict[str, object]) -> Path:
    (tmp_path / "kernel-config").mkdir(exist_ok=True)
    (tmp_path / "kernel-config" / "lab.config").write_text("CONFIG_KVM=y\n")
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def minimal() -> dict[str, object]:
    return {
        "kernels": {"local": {"path": "/src/linux"}},
        "configs": {"lab": {"fragments": ["lab.config"]}},
        "suites": {"gmem-ioctl": {"kind": "pytest", "path": "tests/guest"}},
        "defaults": {"kernel": "local", "config": "lab", "suites": ["gmem-ioctl"]},
    }


def test_shipped_lab_file_loads() -> None:
    lab = config.load()
    assert lab.defaults.kernel == "series"
    assert lab.kernels["mainline"].deb is not None
    assert lab.kernels["mainline"].deb.package == "linux-source-7.3"
    assert lab.kernels["series"].git is not None
    assert lab.kernels["series"].git.ref == "guest_memfd-inplace-conversion-v3"


def test_minimal_file_gets_defaults(tmp_path: Path) -> None:
    lab = config.load(write_lab(tmp_path, minimal()))
    assert lab.vm.accel == "auto"
    assert lab.vm.numa_nodes == 2
    assert lab.fragment_path("lab.config") == tmp_path / "kernel-config" / "lab.config"


def test_unknown_key_names_its_path(tmp_path: Path) -> None:
    data = minimal()
    data["vm"] = {"memroy_mib": 1024}
    with pytest.raises(UserError) as err:
        config.load(write_lab(tmp_path, data))
    assert "vm.memroy_mib" in err.value.message
    assert "unknown key" in err.value.message
    assert str(tmp_path / "lab.yaml") in err.value.message


def test_kernel_needs_exactly_one_source(tmp_path: Path) -> None:
    data = minimal()
    data["kernels"] = {"both": {"path": "/a", "deb": {"package": "p", "suite": "s"}}}
    data["defaults"] = {**data["defaults"], "kernel": "both"}  # type: ignore[dict-item]
    with pytest.raises(UserError, match="exactly one of git, path, deb or mbox"):
        config.load(write_lab(tmp_path, data))


def test_defaults_must_name_known_entries(tmp_path: Path) -> None:
    data = minimal()
    data["defaults"] = {"kernel": "nope", "config": "lab", "suites": ["gmem-ioctl", "ghost"]}
    with pytest.raises(UserError) as err:
        config.load(write_lab(tmp_path, data))
    assert "unknown kernel 'nope'" in err.value.message
    assert "unknown suite 'ghost'" in err.value.message


def test_missing_fragment_file_is_named(tmp_path: Path) -> None:
    data = minimal()
    data["configs"] = {"lab": {"fragments": ["lab.config", "absent.config"]}}
    with pytest.raises(UserError, match=r"'absent\.config' is not a file"):
        config.load(write_lab(tmp_path, data))


def test_wrong_type_is_named(tmp_path: Path) -> None:
    data = minimal()
    data["vm"] = {"cpus": "many"}
    with pytest.raises(UserError, match=r"vm\.cpus"):
        config.load(write_lab(tmp_path, data))


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kernels: [\n")
    with pytest.raises(UserError, match="not valid YAML"):
        config.load(bad)
    with pytest.raises(UserError, match="no such lab file"):
        config.load(tmp_path / "absent.yaml")


# --- an unreadable lab file is a UserError naming it (issue 15, item 7) --------------


def test_lab_file_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is a directory") as err:
        config.load(tmp_path)
    assert str(tmp_path) in err.value.message


def test_lab_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_bytes(b"kernels:\n  caf\xe9: {path: /src}\n")
    with pytest.raises(UserError, match="not UTF-8") as err:
        config.load(path)
    assert str(path) in err.value.message


def test_lab_file_that_cannot_be_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_lab(tmp_path, minimal())

    def denied(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    # chmod 000 does not stop root, who runs these tests in CI containers.
    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(UserError, match="cannot read the lab file: Permission denied") as err:
        config.load(path)
    assert str(path) in err.value.message


def test_lab_file_that_is_not_a_regular_file() -> None:
    with pytest.raises(UserError, match="not a regular file"):
        config.load(Path("/dev/null"))


@pytest.mark.parametrize(
    ("text", "got"),
    [("", "empty"), ("- a\n- b\n", "a list"), ("just text\n", "a str"), ("42\n", "a int")],
)
def test_lab_file_that_is_not_a_mapping(tmp_path: Path, text: str, got: str) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match="expected a mapping") as err:
        config.load(path)
    assert got in err.value.message and str(path) in err.value.message


def test_duplicate_key_is_refused(tmp_path: Path) -> None:
    # Review shows the first value; PyYAML alone would silently use the second.
    path = write_lab(tmp_path, minimal())
    path.write_text(path.read_text() + "kernels: {other: {path: /elsewhere}}\n")
    with pytest.raises(UserError, match="duplicate key 'kernels'") as err:
        config.load(path)
    assert f"{path}, line" in err.value.message


def test_anchors_and_merge_keys_still_work(tmp_path: Path) -> None:
    path = write_lab(tmp_path, minimal())
    path.write_text(
        path.read_text()
        + "matrix:\n  a: &m {kernels: [local], configs: [lab]}\n  b: {<<: *m, configs: [lab]}\n"
    )
    assert config.load(path).matrix["b"].kernels == ["local"]


def test_root_cannot_be_set_from_the_file(tmp_path: Path) -> None:
    data = minimal()
    data["root"] = "/"
    with pytest.raises(UserError, match="root: unknown key"):
        config.load(write_lab(tmp_path, data))


def test_huge_lab_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text("# x\n" * (config.MAX_LAB_FILE_BYTES // 4 + 1))
    with pytest.raises(UserError, match="more than a lab file can be"):
        config.load(path)


def test_deeply_nested_yaml_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text("a: " + "[" * 3000 + "]" * 3000 + "\n")
    with pytest.raises(UserError):
        config.load(path)


# --- each suite kind's keys are checked at load (issue 15, item 6) -------------------


@pytest.mark.parametrize(
    ("suite", "expected"),
    [
        ({"kind": "command"}, "suites.s.argv: kind command needs a non-empty argv"),
        ({"kind": "command", "argv": []}, "suites.s.argv: kind command needs a non-empty argv"),
        ({"kind": "command", "argv": [""]}, "suites.s.argv: argv[0] is empty"),
        ({"kind": "kselftest"}, "suites.s.tests: kind kselftest needs a non-empty tests"),
        (
            {"kind": "command", "argv": ["true"], "tests": ["guest_memfd_test"]},
            "suites.s.tests: kind command does not use tests",
        ),
        (
            {"kind": "kselftest", "tests": ["guest_memfd_test"], "path": "tests/guest"},
            "suites.s.path: kind kselftest does not use path",
        ),
        (
            {"kind": "pytest", "argv": ["pytest"]},
            "suites.s.argv: kind pytest does not use argv",
        ),
        (
            {"kind": "conversions-driver", "tests": ["x"]},
            "suites.s.tests: kind conversions-driver does not use tests",
        ),
        ({"kind": "nosuch"}, "suites.s.kind: Input should be"),
        ({"kind": "kselftest", "tests": ["../../bin/sh"]}, "suites.s.tests[0]"),
    ],
)
def test_suite_kind_needs_are_checked_at_load(
    tmp_path: Path, suite: dict[str, object], expected: str
) -> None:
    data = minimal()
    data["suites"] = {"s": suite}
    data["defaults"] = {"kernel": "local", "config": "lab", "suites": ["s"]}
    with pytest.raises(UserError) as err:
        config.load(write_lab(tmp_path, data))
    assert expected in err.value.message


@pytest.mark.parametrize(
    "suite",
    [
        {"kind": "pytest"},
        {"kind": "pytest", "path": "tests/guest"},
        {"kind": "kselftest", "tests": ["guest_memfd_test", "x86/private_mem_kvm_exits_test"]},
        {"kind": "conversions-driver", "timeout_s": 1800},
        {"kind": "command", "argv": ["sh", "-c", "exit 1; echo 'a b'"]},
    ],
)
def test_complete_suites_load(tmp_path: Path, suite: dict[str, object]) -> None:
    data = minimal()
    data["suites"] = {"s": suite}
    data["defaults"] = {"kernel": "local", "config": "lab", "suites": ["s"]}
    assert config.load(write_lab(tmp_path, data)).suites["s"].kind == suite["kind"]


def test_mirrors_default_to_none_meaning_the_hosts_own() -> None:
    lab = config.load()
    assert lab.image.mirror is None
    assert lab.kernels["mainline"].deb is not None and lab.kernels["mainline"].deb.mirror is None


def test_host_named_qemu_is_refused(tmp_path: Path) -> None:
    data = minimal()
    data["hosts"] = {"qemu": {"ssh": "box"}}
    with pytest.raises(UserError, match=r"hosts\.qemu: 'qemu' names the lab VM target"):
        config.load(write_lab(tmp_path, data))


def test_a_host_with_every_setting_loads(tmp_path: Path) -> None:
    data = minimal()
    data["hosts"] = {
        "tdx-1": {
            "ssh": "root@tdx-1",
            "capabilities": ["tdx"],
            "console": ["ipmitool", "-I", "lanplus", "-H", "tdx-1-bmc", "-E", "sol", "activate"],
            "reset": ["ipmitool", "-H", "tdx-1-bmc", "-E", "chassis", "power", "cycle"],
            "restore": "never",
            "boot_timeout_s": 900,
            "cmdline_extra": ["console=ttyS1,115200n8"],
            "initrd": "host",
        }
    }
    data["configs"] = {"lab": {"fragments": ["lab.config"], "needs": ["tdx"]}}
    lab = config.load(write_lab(tmp_path, data))
    host = lab.hosts["tdx-1"]
    assert host.capabilities == ["tdx"] and host.restore == "never" and host.initrd == "host"
    assert host.console[-1] == "activate" and host.cmdline_extra == ["console=ttyS1,115200n8"]
    assert lab.configs["lab"].needs == ["tdx"]
    # Defaults: restore always, no initramfs, 10 minutes to boot.
    plain = config.HostSpec(ssh="box")
    assert (plain.restore, plain.initrd, plain.boot_timeout_s) == ("always", "none", 600)


@pytest.mark.parametrize(
    ("host", "where", "says"),
    [
        ({"capabilities": ["tdx2"]}, "hosts.box.capabilities[0]", "'kvm', 'kexec', 'tdx'"),
        ({"cmdline_extra": ["a b"]}, "hosts.box.cmdline_extra[0]", "one kernel parameter"),
        ({"cmdline_extra": ['x="y"']}, "hosts.box.cmdline_extra[0]", "no quotes"),
        ({"console": ["", "sol"]}, "hosts.box", "console: argv[0] is empty"),
        ({"restore": "sometimes"}, "hosts.box.restore", "'always' or 'never'"),
        ({"initrd": "/boot/x"}, "hosts.box.initrd", "'none' or 'host'"),
        ({"boot_timeout_s": 5}, "hosts.box.boot_timeout_s", "greater than or equal to 30"),
    ],
)
def test_host_settings_are_checked_at_load(
    tmp_path: Path, host: dict[str, object], where: str, says: str
) -> None:
    data = minimal()
    data["hosts"] = {"box": {"ssh": "box", **host}}
    with pytest.raises(UserError) as err:
        config.load(write_lab(tmp_path, data))
    assert where in err.value.message and says in err.value.message, err.value.message


def test_capability_names_are_the_probes() -> None:
    from typing import get_args

    from harness.config.checks import Capability
    from harness.hosts.capabilities import CAPABILITIES

    assert get_args(Capability) == CAPABILITIES


def test_a_config_needs_only_known_capabilities(tmp_path: Path) -> None:
    data = minimal()
    data["configs"] = {"lab": {"fragments": ["lab.config"], "needs": ["TDX"]}}
    with pytest.raises(UserError, match=r"configs\.lab\.needs\[0\]"):
        config.load(write_lab(tmp_path, data))


def with_kernels(kernels: dict[str, object]) -> dict[str, object]:
    data = minimal()
    data["kernels"] = {"local": {"path": "/src/linux"}, **kernels}
    return data


def test_mbox_kernel_and_expect_load(tmp_path: Path) -> None:
    data = with_kernels(
        {
            "v2": {"mbox": {"file": "series.mbox", "base": "local"}, "expect": ["attrs2_gmem"]},
            "v8": {"mbox": {"message_id": "<20260618-x-v8-0-abc@google.com>", "base": "local"}},
        }
    )
    lab = config.load(write_lab(tmp_path, data))
    v2 = lab.kernels["v2"]
    assert v2.kind == "mbox" and v2.mbox is not None and v2.mbox.base == "local"
    assert v2.expect == ["attrs2_gmem"] and lab.kernels["local"].expect == []
    assert lab.kernels["v8"].mbox is not None


@pytest.mark.parametrize(
    ("mbox", "problem"),
    [
        ({"file": "s.mbox", "base": "nope"}, "kernels.bad.mbox.base: unknown kernel 'nope'"),
        ({"file": "s.mbox", "base": "other"}, "'other' is an mbox kernel itself"),
        ({"base": "local"}, "give exactly one of file (an mbox) or message_id"),
        (
            {"file": "s.mbox", "message_id": "a@b", "base": "local"},
            "give exactly one of file (an mbox) or message_id",
        ),
        ({"message_id": "--exec=x", "base": "local"}, "is not a Message-ID"),
        ({"message_id": "a b@c", "base": "local"}, "is not a Message-ID"),
        ({"file": "s.mbox", "base": "../x"}, "kernels.bad.mbox.base"),
    ],
)
def test_mbox_kernel_mistakes_are_named(
    tmp_path: Path, mbox: dict[str, object], problem: str
) -> None:
    data = with_kernels(
        {"other": {"mbox": {"file": "o.mbox", "base": "local"}}, "bad": {"mbox": mbox}}
    )
    with pytest.raises(UserError) as err:
        config.load(write_lab(tmp_path, data))
    assert problem in err.value.message


def test_expect_names_are_the_probes(tmp_path: Path) -> None:
    data = with_kernels({"x": {"path": "/x", "expect": ["attrs2_gmem", "attrs_2"]}})
    with pytest.raises(UserError) as err:
        config.load(write_lab(tmp_path, data))
    assert "kernels.x.expect[1]" in err.value.message
    assert "'attrs_2' is not a feature the guest probe reports" in err.value.message
    assert "attrs2_gmem" in err.value.message  # the known names are listed
