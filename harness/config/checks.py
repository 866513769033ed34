"""What every lab.yaml value is held to: the strict Model base and the string rules.

lab.yaml is code-review material in a CI repository, so it is treated as untrusted
text: every string that later becomes a folder name, a command-line word, a git URL or
a sources.list field is held to a narrow pattern here, at load time, before anything
runs (README.md, "What the lab guarantees on hostile input").

Each rule is a validator on the field's type, so pydantic reports the key path; the
message states the expected form, which is the fix.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict

from harness import arch, names
from harness.aptsources import MIRROR


class Model(BaseModel):
    """Every lab.yaml section: unknown keys are errors, values never change after load."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _rule(
    pattern: re.Pattern[str], form: str, refuse: Callable[[str], bool] | None = None
) -> AfterValidator:
    """A validator: value must match pattern (and not be refused), else '... is not form'."""

    def check(value: str) -> str:
        # fullmatch: with match, "$" also matches before a trailing newline.
        if not pattern.fullmatch(value) or (refuse is not None and refuse(value)):
            raise ValueError(f"{value!r} is not {form}")
        return value

    return AfterValidator(check)


# kernel, config, suite, host, matrix and recipe names: they become folder names.
SafeName = Annotated[
    str,
    _rule(
        names.SAFE_NAME,
        "a safe name: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or "
        "digit (it becomes a folder name)",
        refuse=lambda v: not names.is_safe_name(v),
    ),
]

# fragments, suites.*.path, kselftest names: a/b/c under a known folder. No part is
# '.', '..' or starts with '-' (never an option to pytest or make); no spaces or shell
# characters.
_PATH_PART = r"[A-Za-z0-9_][A-Za-z0-9._+-]*"
RelPath = Annotated[
    str,
    _rule(
        re.compile(rf"^{_PATH_PART}(?:/{_PATH_PART})*$"),
        "a plain relative path: use parts of letters, digits, '.', '_', '+' or '-' "
        "separated by '/' (no leading '/', no '..', no part starting with '.' or '-')",
    ),
]

# Debian package and suite names (Debian policy's package-name rule): they go into a
# sources.list line, a cache folder name and mmdebstrap's argv.
DebWord = Annotated[
    str,
    _rule(
        re.compile(r"^[a-z0-9][a-z0-9.+-]*$"),
        "a Debian package or suite name: lower-case letters, digits, '.', '+' or '-', "
        "starting with a letter or digit (e.g. trixie-backports)",
        refuse=lambda v: ".." in v,
    ),
]
Mirror = Annotated[
    str,
    _rule(
        MIRROR,
        "an allowed mirror URL: http://HOST[:PORT]/PATH, https://HOST[:PORT]/PATH or "
        "file:///PATH, with no spaces, brackets or user names",
    ),
]
# An absolute path of plain parts (a keyring inside [signed-by=], a remote workdir).
_ABS_PATH = rf"(?:/{_PATH_PART})+/?"
AbsPath = Annotated[
    str,
    _rule(
        re.compile(rf"^{_ABS_PATH}$"),
        "a plain absolute path: '/' then parts of letters, digits, '.', '_', '+' or '-' "
        "(no spaces, brackets or '..')",
    ),
]

# git: the schemes the lab fetches over (git's own GIT_ALLOW_PROTOCOL is set to the
# same list in harness/sources/git.py, so a redirect or submodule cannot widen it).
GIT_SCHEMES = ("https", "ssh", "git", "file")
_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])$")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
# user@host:path, git's scp-like form. The path may not start with ':' (that would be
# git's "<transport>::<address>" form, e.g. ext::, which runs a command).
_SCP = re.compile(r"^(?:(?P<user>[^@/:]+)@)?(?P<host>[^@/:]+):(?P<path>[^:].*)$")
_GIT_URL_FORM = (
    "use https://HOST/PATH, ssh://[USER@]HOST/PATH, git://HOST/PATH, file:///PATH, "
    "USER@HOST:PATH or an absolute path (no leading '-', no spaces, no credentials)"
)


def _git_url(value: str) -> str:
    def refuse(why: str) -> ValueError:
        return ValueError(f"{value!r} is not an allowed git URL ({why}): {_GIT_URL_FORM}")

    if not value or value.startswith("-"):
        raise refuse("it would be read as an option")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise refuse("spaces or control characters")
    if "://" in value:
        parts = urlsplit(value)
        if parts.scheme not in GIT_SCHEMES:
            raise refuse(f"scheme {parts.scheme!r}")
        if parts.scheme == "file":
            if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
                raise refuse("file URLs are file:///absolute/path")
            return value
        if parts.password is not None or (parts.username and parts.scheme != "ssh"):
            raise refuse("credentials belong in your SSH or git credential setup")
        if parts.username is not None and not _USER.match(parts.username):
            raise refuse("user name")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise refuse("port") from None
        host = parts.netloc.rpartition("@")[2]
        host = re.sub(r":[0-9]*$", "", host) if not host.endswith("]") else host
        if not _HOST.match(host):
            raise refuse("host name")
        return value
    if value.startswith("/"):
        return value
    m = _SCP.match(value)
    if m is None or not _HOST.match(m["host"]):
        raise refuse("not a URL, an absolute path or USER@HOST:PATH")
    if m["user"] is not None and not _USER.match(m["user"]):
        raise refuse("user name")
    return value


GitUrl = Annotated[str, AfterValidator(_git_url)]
# A branch, tag or commit id: never an option, never a refspec (no ':'), no revision
# syntax (~, ^, ..).
GitRef = Annotated[
    str,
    _rule(
        re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/+-]*$"),
        "an allowed git ref: a branch, tag or commit id of letters, digits, '.', '_', '+', "
        "'-' and '/', starting with a letter or digit (no '..', ':', '~', '^' or spaces)",
        refuse=lambda v: ".." in v or "//" in v or v.endswith(("/", ".", ".lock")),
    ),
]
# A mail's Message-ID (with or without <>): b4 gets it after `--`, and it names a file.
MessageId = Annotated[
    str,
    _rule(
        re.compile(r"^<?[A-Za-z0-9][A-Za-z0-9._%+=$#!~/-]*@[A-Za-z0-9][A-Za-z0-9._-]*>?$"),
        "a Message-ID: local@domain, optionally in <>, without spaces",
    ),
]
# `make <base>`: a *config target, never a variable assignment (CC=...) or an option.
ConfigTarget = Annotated[
    str,
    _rule(
        re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*config$"),
        "a kernel config target: a make target ending in 'config' (defconfig, tinyconfig, "
        "x86_64_defconfig, ...)",
    ),
]
# ssh destination for a bare-metal host: an alias or user@host, never an ssh option.
SshDest = Annotated[
    str,
    _rule(
        re.compile(r"^(?:[A-Za-z0-9_][A-Za-z0-9._-]*@)?[A-Za-z0-9][A-Za-z0-9.-]*$"),
        "an SSH destination: an alias from your SSH config or user@host (letters, digits, "
        "'.', '_', '-'; no options, no ports: put those in ~/.ssh/config)",
    ),
]
# vm.qemu: a command name found on PATH or an absolute path, never an option.
Program = Annotated[
    str,
    _rule(
        re.compile(rf"^(?:{_ABS_PATH}|{_PATH_PART})$"),
        f"a program: a command name on PATH ({arch.HOST.qemu}) or an absolute path",
    ),
]


# What a host can be declared for (hosts.*.capabilities) and a config set can need
# (configs.*.needs): the capabilities the host probe answers for
# (harness/hosts/capabilities.py; a unit test keeps the two lists equal).
Capability = Literal["kvm", "kexec", "tdx", "sev", "snp"]

# hosts.*.cmdline_extra: one kernel command-line word each (kexec passes the whole line
# as one argument; a blank or quote would split or join words on the host's side).
KernelParam = Annotated[
    str,
    _rule(
        re.compile(r'^[^\s"]+$'),
        "one kernel parameter (e.g. console=ttyS1,115200n8): no blanks, no quotes",
    ),
]


def _argv_word(value: str) -> str:
    # Quoted by shlex.join on the way to the guest; a NUL cannot cross SSH intact.
    if "\0" in value:
        raise ValueError("argv words may not contain NUL characters")
    return value


ArgvWord = Annotated[str, AfterValidator(_argv_word)]


def inside(root: Path, rel: str) -> bool:
    """rel, with every symlink resolved, names something inside root."""
    real_root = root.resolve()
    return (real_root / rel).resolve().is_relative_to(real_root)
