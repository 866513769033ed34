"""What runs on a host, as pure words: the test kernel's command line (the host's own,
adjusted), the root= and initrd the test kernel boots with, and the argv that jump into
a loaded kernel or reboot into the default one (each ends the SSH session it runs in).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from harness.errors import UserError
from harness.hosts import lock as hlock
from harness.hosts.probe_state import HostProbe
from harness.hosts.target import HostTarget

DEFAULT_PANIC_S = 30
# Runs "$@" detached from the SSH session (which the switch is about to end).
_DETACHED = 'setsid "$@" </dev/null >/dev/null 2>&1 &'
# Root device forms the kernel resolves without an initramfs.
_ROOT_WITHOUT_INITRD = re.compile(r"^(PARTUUID=|PARTLABEL=|/dev/(sd|vd|hd|xvd|nvme|mmcblk))")
_DROPPED = ("BOOT_IMAGE", "initrd", hlock.RUN_MARKER)


def split_cmdline(text: str) -> list[str]:
    """Kernel command-line words: split at blanks, except inside double quotes."""
    words: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text.strip():
        if ch == '"':
            quoted = not quoted
        if ch.isspace() and not quoted:
            if current:
                words.append("".join(current))
                current = []
            continue
        current.append(ch)
    if current:
        words.append("".join(current))
    return words


def run_marker(run_id: str) -> str:
    """The word only a run's kexec'd kernel has on its command line: how a boot of the
    test kernel is told from any other boot, even of the same build."""
    return f"{hlock.RUN_MARKER}={run_id}"


def has_marker(cmdline: str, run_id: str) -> bool:
    return run_marker(run_id) in split_cmdline(cmdline)


def _key(word: str) -> str:
    return word.split("=", 1)[0]


def kexec_cmdline(
    host_cmdline: str,
    params: Sequence[str],
    *,
    root: str | None = None,
    run_id: str | None = None,
    panic_s: int | None = DEFAULT_PANIC_S,
) -> str:
    """The test kernel's command line: the host's own, minus the boot loader's words
    (BOOT_IMAGE=, initrd=) and any earlier marker, with params replacing host words of
    the same key, then panic=, the run marker, and the init arguments after `--`."""
    for word in params:
        if not word or any(c.isspace() or c == '"' for c in word):
            raise UserError(
                f"kernel parameter {word!r} is empty or holds a blank or a quote",
                "give each kernel parameter as one word in lab.yaml",
            )
    words = split_cmdline(host_cmdline)
    init: list[str] = []
    if "--" in words:
        cut = words.index("--")
        words, init = words[:cut], words[cut:]
    extra = list(params)
    if root is not None:
        extra = [w for w in extra if _key(w) != "root"] + [f"root={root}"]
        if "rootwait" not in words and "rootwait" not in extra:
            extra.append("rootwait")
    if panic_s is not None and "panic" not in {_key(w) for w in extra}:
        extra.append(f"panic={panic_s}")
    if run_id is not None:
        extra.append(run_marker(run_id))
    replaced = {_key(w) for w in extra} | set(_DROPPED)
    kept = [w for w in words if _key(w) not in replaced]
    return " ".join(kept + extra + init)


def root_for(probe: HostProbe, target: HostTarget) -> str | None:
    """A root= the test kernel can mount without an initramfs, or None to keep the
    host's. UserError when there is none and the host's root needs its initramfs."""
    if target.initrd == "host":
        return None
    host_root = next((w[5:] for w in split_cmdline(probe.cmdline) if w.startswith("root=")), "")
    if _ROOT_WITHOUT_INITRD.match(host_root):
        return None
    if probe.root_partuuid:
        return f"PARTUUID={probe.root_partuuid}"
    raise UserError(
        f"hosts.{target.name}: the host's root (root={host_root or '?'}, "
        f"{probe.root_source or 'unknown device'}) needs an initramfs to be found",
        f"set hosts.{target.name}.initrd: host to boot the test kernel with the host's own",
    )


def initrd_for(probe: HostProbe, target: HostTarget) -> str | None:
    if target.initrd == "none":
        return None
    if probe.initrd is None:
        raise UserError(
            f"hosts.{target.name}.initrd is host, but no initramfs of {probe.release} was "
            "found under /boot",
            "use initrd: none (root by PARTUUID) or install the host's initramfs",
        )
    return probe.initrd


def switch_argv(probe: HostProbe) -> list[str]:
    """The command that jumps into the loaded kernel; it ends this SSH session."""
    if probe.systemd:
        return ["systemctl", "--no-block", "kexec"]
    kexec = probe.kexec.binary or "kexec"
    return ["sh", "-c", _DETACHED, "gmemlab-switch", "sh", "-c", 'sleep 2; exec "$0" -e', kexec]


def reboot_argv(systemd: bool) -> list[str]:
    if systemd:
        return ["systemctl", "--no-block", "reboot"]
    return ["sh", "-c", _DETACHED, "gmemlab-reboot", "sh", "-c", "sleep 2; exec reboot"]
