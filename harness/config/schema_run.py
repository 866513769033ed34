"""lab.yaml's run settings: `image:`, `vm:`, `hosts:`, `suites:`, `matrix:`, `defaults:`.

Each section's model belongs to the stage that reads it (image build, QEMU boot, the
bare-metal hosts, the suite runner, the matrix); defaults name what `lab run` uses
when the command line does not say.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from harness import arch
from harness.config.checks import (
    AbsPath,
    ArgvWord,
    Capability,
    DebWord,
    KernelParam,
    Mirror,
    Model,
    Program,
    RelPath,
    SafeName,
    SshDest,
)

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
    qemu: Program = arch.HOST.qemu
    # lean: /usr/local/sbin/gmemlab-init (mounts, static user-net address, sshd), the
    # fast default; systemd: the image's full systemd boot with networkd DHCP.
    init: Literal["lean", "systemd"] = "lean"
    boot_timeout_s: Annotated[int, Field(ge=5)] = 180
    # No console output and no SSH for this long means the guest hung.
    silence_timeout_s: Annotated[int, Field(ge=5)] = 120
    cmdline_extra: list[str] = []


class HostSpec(Model):
    """A bare-metal host reached through the user's SSH config (alias or user@host).

    The host stage (harness/run_host.py) kexecs the cell's kernel into it and reboots it
    into its default kernel afterwards; README.md, "Bare-metal hosts", says what the
    lab does to a host.
    """

    ssh: SshDest
    workdir: AbsPath = "/var/tmp/gmemlab"
    # What the host is for, e.g. [tdx]: checked against the host's probe at every run; a
    # declared capability the machine lacks is an error naming both.
    capabilities: list[Capability] = []
    # A local argv that prints the host's console (ipmitool ... sol activate, a serial
    # server's client), captured into the cell's console.log from before the kexec to
    # the end of the run. An argv, never a shell line; no secrets in it (use the tool's
    # password file or environment variable).
    console: list[ArgvWord] = []
    # A local argv that power-cycles the host; used only when a test kernel left it
    # unreachable. Empty: such a host is left for a person (the report says so).
    reset: list[ArgvWord] = []
    # always: reboot into the host's default kernel after the run (also after a failure
    # or Ctrl-C); never: leave the test kernel running, for debugging.
    restore: Literal["always", "never"] = "always"
    # From the kexec until the test kernel answers SSH (and the same for the restore).
    boot_timeout_s: Annotated[int, Field(ge=30)] = 600
    # Host-specific test-kernel parameters (e.g. its console=ttyS1,115200n8).
    cmdline_extra: list[KernelParam] = []
    # none: no initramfs (root by PARTUUID when the host's root= needs one); host: the
    # host's own initramfs for its running kernel.
    initrd: Literal["none", "host"] = "none"

    @model_validator(mode="after")
    def _commands_name_a_program(self) -> Self:
        for key in ("console", "reset"):
            argv = getattr(self, key)
            if argv and not argv[0]:
                raise ValueError(f"{key}: argv[0] is empty: name the program to run")
        return self


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
    # The suite needs the guest to reach the network. Without it (the default) the VM's
    # user networking is restricted to the lab's SSH forward (QEMU restrict=on): the
    # guest reaches neither the host's loopback services nor the outside.
    network: bool = False

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


# --- matrix and defaults -------------------------------------------------------------


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
