"""lab.yaml: load, validate, and hand out typed, frozen settings.

Validation is pydantic's (extra keys forbidden everywhere), so a typo in lab.yaml is an
error naming the file, the key path and the expected form, not a silently ignored key.
Each section's model belongs to the stage that uses it; cross-references between
sections (a config set's fragments exist, defaults name real entries) are checked here.

lab.yaml is code-review material in a CI repository, so it is treated as untrusted
text: every string that later becomes a folder name, a command-line word, a git URL or
a sources.list field is held to a narrow pattern here, at load time, before anything
runs (README.md, "What the lab guarantees on hostile input").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from harness import names
from harness.aptsources import MIRROR
from harness.errors import UserError
from harness.paths import REPO_ROOT

DEFAULT_LAB_FILE = REPO_ROOT / "lab.yaml"
# A lab file is a page of YAML; anything this big is a mistake (or /dev/zero).
MAX_LAB_FILE_BYTES = 1 << 20


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- string rules --------------------------------------------------------------------
# Each rule is a validator on the field's type, so pydantic reports the key path; the
# message states the expected form, which is the fix.


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
# same list in source.py, so a redirect or submodule cannot widen it).
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
        "a program: a command name on PATH (qemu-system-x86_64) or an absolute path",
    ),
]


def _argv_word(value: str) -> str:
    # Quoted by shlex.join on the way to the guest; a NUL cannot cross SSH intact.
    if "\0" in value:
        raise ValueError("argv words may not contain NUL characters")
    return value


ArgvWord = Annotated[str, AfterValidator(_argv_word)]


# --- kernels: where a kernel tree comes from -------------------------------------------


class GitSource(Model):
    url: GitUrl
    ref: GitRef
    # The series' base commit, kept for A/B runs against the base tree.
    base: GitRef | None = None


class DebSource(Model):
    package: DebWord
    suite: DebWord
    # None: the mirror this machine's own apt sources use (aptsources.host_mirror).
    mirror: Mirror | None = None
    # Verifies the suite's Release file; apt never falls back to unsigned sources.
    keyring: AbsPath = "/usr/share/keyrings/debian-archive-keyring.gpg"


class KernelSource(Model):
    """Exactly one of git, path or deb."""

    git: GitSource | None = None
    path: Path | None = None
    deb: DebSource | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = [k for k in ("git", "path", "deb") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of git, path or deb (got {given or 'none'})")
        return self


# --- configs: a base defconfig target plus fragments from kernel-config/ --------------


class ConfigSet(Model):
    base: ConfigTarget = "defconfig"
    # Files under kernel-config/ (checked to exist, and to stay inside it, at load).
    fragments: list[RelPath] = Field(min_length=1)


# --- image and VM --------------------------------------------------------------------


class ImageSpec(Model):
    # A folder under images/ holding the recipe (package list, overlay files).
    recipe: SafeName = "trixie"
    suite: DebWord = "trixie"
    # None: the mirror this machine's own apt sources use (aptsources.host_mirror);
    # left out of the recipe hash's inputs then, so every machine shares one hash.
    mirror: Mirror | None = None
    size_mib: Annotated[int, Field(ge=512)] = 4096


class VmSpec(Model):
    memory_mib: Annotated[int, Field(ge=256)] = 2048
    cpus: Annotated[int, Field(ge=1)] = 2
    # Two NUMA nodes by default so guest_memfd's mbind tests run instead of skipping.
    numa_nodes: Annotated[int, Field(ge=1, le=8)] = 2
    accel: Literal["auto", "kvm", "tcg"] = "auto"
    qemu: Program = "qemu-system-x86_64"
    # lean: /usr/local/sbin/gmemlab-init (mounts, static user-net address, sshd), the
    # fast default; systemd: the image's full systemd boot with networkd DHCP.
    init: Literal["lean", "systemd"] = "lean"
    boot_timeout_s: Annotated[int, Field(ge=5)] = 180
    # No console output and no SSH for this long means the guest hung.
    silence_timeout_s: Annotated[int, Field(ge=5)] = 120
    cmdline_extra: list[str] = []


class HostSpec(Model):
    """A bare-metal host reached through the user's SSH config (alias or user@host)."""

    ssh: SshDest
    workdir: AbsPath = "/var/tmp/gmemlab"
    # What the host is for, e.g. ["tdx"]; the matrix only places cells that need a
    # capability on hosts that declare it.
    capabilities: list[SafeName] = []


# --- suites --------------------------------------------------------------------------


SuiteKind = Literal["pytest", "kselftest", "conversions-driver", "command"]
# What each kind reads besides kind and timeout_s: the one key it needs (None: none),
# and the keys it would silently ignore, which are errors instead.
_KIND_NEEDS: dict[str, str | None] = {
    "pytest": None,  # path defaults to tests/guest
    "kselftest": "tests",
    "conversions-driver": None,
    "command": "argv",
}
_KIND_TAKES: dict[str, set[str]] = {
    "pytest": {"path"},
    "kselftest": {"tests"},
    "conversions-driver": set(),
    "command": {"argv"},
}
_KIND_EXAMPLE = {"tests": "tests: [guest_memfd_test]", "argv": "argv: [uname, -a]"}


class SuiteSpec(Model):
    kind: SuiteKind
    timeout_s: Annotated[int, Field(ge=1)] = 600
    # kselftest: names of the built selftests to run (each with its own timeout).
    tests: list[RelPath] = []
    # pytest: the test folder relative to the repo, pushed into the guest.
    path: RelPath | None = None
    # command: an argv run in the guest (test-only suites, e.g. a deliberate failure).
    argv: list[ArgvWord] = []

    def kind_problems(self) -> list[tuple[str, str]]:
        """(key, problem) for each key this kind needs but lacks, or has but ignores.

        Checked by LabConfig at load (so the key path names the suite), not here: a
        suite built in code (tests) may be deliberately incomplete.
        """
        problems = []
        given = {k for k in ("tests", "path", "argv") if getattr(self, k)}
        need = _KIND_NEEDS[self.kind]
        if need is not None and need not in given:
            problems.append(
                (need, f"kind {self.kind} needs a non-empty {need} (e.g. {_KIND_EXAMPLE[need]})")
            )
        for key in sorted(given - _KIND_TAKES[self.kind]):
            problems.append(
                (key, f"kind {self.kind} does not use {key}: remove it (or change kind)")
            )
        if self.kind == "command" and self.argv and not self.argv[0]:
            problems.append(("argv", "argv[0] is empty: name the program to run"))
        return problems


# --- matrix --------------------------------------------------------------------------


class MatrixSpec(Model):
    kernels: list[SafeName] = Field(min_length=1)
    configs: list[SafeName] = Field(min_length=1)
    # "qemu" (the VM above) or names from hosts:.
    targets: list[SafeName] = ["qemu"]
    suites: list[SafeName] | None = None


class Defaults(Model):
    kernel: SafeName
    config: SafeName
    target: SafeName = "qemu"
    suites: list[SafeName] = Field(min_length=1)


def _inside(root: Path, rel: str) -> bool:
    """rel, with every symlink resolved, names something inside root."""
    real_root = root.resolve()
    return (real_root / rel).resolve().is_relative_to(real_root)


class LabConfig(Model):
    kernels: dict[SafeName, KernelSource]
    configs: dict[SafeName, ConfigSet]
    image: ImageSpec = ImageSpec()
    vm: VmSpec = VmSpec()
    hosts: dict[SafeName, HostSpec] = {}
    suites: dict[SafeName, SuiteSpec]
    matrix: dict[SafeName, MatrixSpec] = {}
    defaults: Defaults
    # The folder lab.yaml was read from; fragments and recipes resolve against it.
    root: Path = REPO_ROOT

    @model_validator(mode="after")
    def _references_exist(self) -> Self:
        problems: list[str] = []

        def need(kind: str, name: str, table: Mapping[str, object], where: str) -> None:
            if name not in table:
                known = ", ".join(sorted(table)) or "none"
                problems.append(f"{where}: unknown {kind} {name!r} (known: {known})")

        targets = {"qemu": None, **self.hosts}
        need("kernel", self.defaults.kernel, self.kernels, "defaults.kernel")
        need("config", self.defaults.config, self.configs, "defaults.config")
        need("target", self.defaults.target, targets, "defaults.target")
        for suite in self.defaults.suites:
            need("suite", suite, self.suites, "defaults.suites")
        for name, cell in self.matrix.items():
            for k in cell.kernels:
                need("kernel", k, self.kernels, f"matrix.{name}.kernels")
            for c in cell.configs:
                need("config", c, self.configs, f"matrix.{name}.configs")
            for t in cell.targets:
                need("target", t, targets, f"matrix.{name}.targets")
            for s in cell.suites or []:
                need("suite", s, self.suites, f"matrix.{name}.suites")
        if "qemu" in self.hosts:
            problems.append("hosts.qemu: 'qemu' names the lab VM target; rename the host")
        fragments = self.root / "kernel-config"
        for name, cs in self.configs.items():
            for frag in cs.fragments:
                if not _inside(fragments, frag):
                    problems.append(
                        f"configs.{name}.fragments: {frag!r} leads outside {fragments} "
                        "(a symlink); use a file inside kernel-config/"
                    )
                elif not (fragments / frag).is_file():
                    problems.append(
                        f"configs.{name}.fragments: {frag!r} is not a file in {fragments}"
                    )
        for name, spec in self.suites.items():
            for key, problem in spec.kind_problems():
                problems.append(f"suites.{name}.{key}: {problem}")
            # The runner pushes it from the harness checkout (REPO_ROOT); a lab file
            # elsewhere has its own root: inside both, whichever is used.
            for root in dict.fromkeys((self.root, REPO_ROOT)):
                if spec.path is not None and not _inside(root, spec.path):
                    problems.append(
                        f"suites.{name}.path: {spec.path!r} leads outside {root} (a "
                        "symlink); use a folder inside the repository"
                    )
        if not _inside(self.root / "images", self.image.recipe):
            problems.append(
                f"image.recipe: {self.image.recipe!r} leads outside {self.root / 'images'} "
                "(a symlink); use a folder inside images/"
            )
        if problems:
            # One problem a line; _format_validation_error prints each on its own.
            raise ValueError("\n".join(problems))
        return self

    def fragment_path(self, fragment: str) -> Path:
        return self.root / "kernel-config" / fragment

    def recipe_dir(self) -> Path:
        return self.root / "images" / self.image.recipe


def _key_path(loc: tuple[int | str, ...]) -> str:
    """pydantic's loc as lab.yaml's key path; an odd key (a hostile name) is quoted."""
    out = ""
    for i, part in enumerate(loc):
        if part == "[key]" and i == len(loc) - 1:
            out += " (the name)"
        elif isinstance(part, int):
            out += f"[{part}]"
        elif names.SAFE_NAME.fullmatch(part) and ".." not in part:
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


def _format_validation_error(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: invalid lab configuration"]
    for item in err.errors():
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling against README.md, 'lab.yaml')"
        loc = _key_path(item["loc"])
        if not loc:
            # Cross-reference problems: each line already starts with its key path.
            lines += [f"  {line}" for line in msg.splitlines()]
        else:
            lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


class _StrictLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping.

    PyYAML keeps the last value silently; in review, the first one is what a reader
    sees, so a duplicate could hide the value that is really used.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(
                key_node, yaml.ScalarNode
            ):
                continue
            key = (key_node.tag, key_node.value)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"duplicate key {key_node.value!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read(path: Path) -> object:
    """The lab file's YAML; every way it can be unreadable is a UserError naming it."""
    fix_path = "pass --lab FILE (a lab.yaml) or run from the checkout"
    try:
        if path.is_dir():
            raise UserError(f"{path}: is a directory, not a lab file", fix_path)
        if not path.exists():
            raise UserError(f"{path}: no such lab file", fix_path)
        if not path.is_file():
            raise UserError(f"{path}: not a regular file", fix_path)
        if path.stat().st_size > MAX_LAB_FILE_BYTES:
            raise UserError(
                f"{path}: {path.stat().st_size} bytes, more than a lab file can be "
                f"({MAX_LAB_FILE_BYTES} bytes)",
                fix_path,
            )
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})",
            "save lab.yaml as UTF-8",
        ) from None
    except OSError as exc:
        raise UserError(
            f"{path}: cannot read the lab file: {exc.strerror or exc}",
            "check the file's permissions, or pass --lab FILE",
        ) from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # _StrictLoader is a SafeLoader
    except yaml.YAMLError as exc:
        detail = str(exc).replace('"<unicode string>"', str(path))
        fix = (
            "keep one of the two keys"
            if "duplicate key" in detail
            else "fix the syntax at the place named"
        )
        raise UserError(f"{path}: not valid YAML: {detail}", fix) from None
    except RecursionError:
        raise UserError(
            f"{path}: nested too deeply to be a lab file", "see README.md, lab.yaml"
        ) from None


def load(path: Path | None = None) -> LabConfig:
    """Read and validate lab.yaml; any problem is a UserError naming file and key."""
    path = (path or DEFAULT_LAB_FILE).absolute()
    raw = _read(path)
    if not isinstance(raw, dict):
        kind = "empty" if raw is None else f"a {type(raw).__name__}"
        raise UserError(
            f"{path}: expected a mapping (kernels:, configs:, ...) at the top level, got {kind}",
            "see README.md, lab.yaml",
        )
    if "root" in raw:
        # root is where lab.yaml was read from; the file cannot move it elsewhere.
        raise UserError(
            f"{path}: invalid lab configuration\n  root: unknown key (check its spelling "
            "against README.md, 'lab.yaml')",
            "fix lab.yaml at the keys named",
        )
    try:
        return LabConfig.model_validate({**raw, "root": path.resolve().parent})
    except ValidationError as exc:
        raise UserError(
            _format_validation_error(path, exc), "fix lab.yaml at the keys named"
        ) from None
