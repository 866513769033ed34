"""The host's Debian mirror, from its apt sources: one-line and deb822 formats, the
Python reader (harness/aptsources.py) and ci/apt-mirror.sh (ci/deps.sh) agreeing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness import aptsources
from harness.errors import UserError
from harness.paths import REPO_ROOT

ONE_LINE = """\
# a comment line
deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
http://mirror.example/debian/ bookworm main contrib
deb-src http://src.example/debian bookworm main
deb [ arch=amd64 ] http://security.example/debian-security bookworm-security main
deb http://mirror.example/debian bookworm-updates main  # trailing comment
"""

DEB822 = """\
Types: deb deb-src
# http://snapshot.example/archive/debian/20250520T000000Z
URIs: https://local-mirror.example:8443/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: https://local-mirror.example:8443/debian-security
Suites: bookworm-security
Components: main

Types: deb
Enabled: no
URIs: http://disabled.example/debian
Suites: bookworm
Components: main
"""

THIRD_PARTY = """\
Types: deb
URIs: https://vendor.example/apt
Suites: nodistro
Components: main
"""


def etc(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "apt"
    (root / "sources.list.d").mkdir(parents=True)
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def release(tmp_path: Path, text: str = "ID=debian\nVERSION_CODENAME=bookworm\n") -> Path:
    path = tmp_path / "os-release"
    path.write_text(text)
    return path


def test_one_line_format() -> None:
    entries = aptsources.parse_one_line(ONE_LINE)
    assert [(e.uri, e.suites) for e in entries] == [
        ("http://mirror.example/debian/", ("bookworm",)),
        ("http://security.example/debian-security", ("bookworm-security",)),
        ("http://mirror.example/debian", ("bookworm-updates",)),
    ]


def test_deb822_format() -> None:
    entries = aptsources.parse_deb822(DEB822)
    assert [(e.uri, e.suites) for e in entries] == [
        ("https://local-mirror.example:8443/debian", ("bookworm", "bookworm-updates")),
        ("https://local-mirror.example:8443/debian-security", ("bookworm-security",)),
    ]


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"sources.list": ONE_LINE}, "http://mirror.example/debian"),
        (
            {"sources.list.d/debian.sources": DEB822, "sources.list.d/vendor.sources": THIRD_PARTY},
            "https://local-mirror.example:8443/debian",
        ),
        # sources.list comes first, as apt reads it.
        (
            {"sources.list": ONE_LINE, "sources.list.d/debian.sources": DEB822},
            "http://mirror.example/debian",
        ),
        # Files of other names are not apt's and are not read.
        (
            {
                "sources.list.d/old.list.disabled": "deb http://off.example/debian bookworm main\n",
                "sources.list.d/debian.sources": DEB822,
            },
            "https://local-mirror.example:8443/debian",
        ),
    ],
)
def test_host_mirror_and_the_shell_helper_agree(
    tmp_path: Path, files: dict[str, str], expected: str
) -> None:
    root = etc(tmp_path, files)
    assert aptsources.host_mirror(root, release(tmp_path)) == expected
    done = subprocess.run(
        ["bash", str(REPO_ROOT / "ci" / "apt-mirror.sh"), "bookworm", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stdout.strip()) == (0, expected)


def test_an_alias_suite_is_used_when_the_codename_is_not_listed(tmp_path: Path) -> None:
    root = etc(tmp_path, {"sources.list": "deb http://mirror.example/debian stable main\n"})
    assert aptsources.host_mirror(root, release(tmp_path)) == "http://mirror.example/debian"


def test_no_debian_entry_is_a_user_error_naming_the_fix(tmp_path: Path) -> None:
    root = etc(tmp_path, {"sources.list.d/vendor.sources": THIRD_PARTY})
    with pytest.raises(UserError) as err:
        aptsources.host_mirror(root, release(tmp_path))
    assert "no Debian mirror found" in err.value.message
    assert "image.mirror" in err.value.message and "deb.mirror" in err.value.message
    done = subprocess.run(
        ["bash", str(REPO_ROOT / "ci" / "apt-mirror.sh"), "bookworm", str(root)],
        capture_output=True,
        check=False,
    )
    assert done.returncode == 1 and not done.stdout


def test_a_non_debian_host_is_not_guessed_from(tmp_path: Path) -> None:
    root = etc(tmp_path, {"sources.list": "deb http://mirror.example/ubuntu noble main\n"})
    with pytest.raises(UserError, match="not Debian") as err:
        aptsources.host_mirror(root, release(tmp_path, "ID=ubuntu\nVERSION_CODENAME=noble\n"))
    assert "mirror:" in err.value.message


def test_entries_with_odd_uris_are_skipped(tmp_path: Path) -> None:
    text = (
        "deb cdrom:[Debian 12]/ bookworm main\n"
        "deb tor+http://onion.example/debian bookworm main\n"
        "deb http://mirror.example/debian bookworm main\n"
    )
    root = etc(tmp_path, {"sources.list": text})
    assert aptsources.host_mirror(root, release(tmp_path)) == "http://mirror.example/debian"
