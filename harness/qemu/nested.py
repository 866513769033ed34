"""The guest's own KVM (nested virtualisation): the image's probe, read from the console
or run over SSH.

The probe prints the facts as one JSON line. The lean init prints it on the
console (NESTED_MARK), so no SSH round trip is needed; otherwise it is run over SSH.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from harness.remote import Endpoint, Remote

NESTED_PROBE = "/usr/local/sbin/gmemlab-nested"
NESTED_MARK = "gmemlab-nested: "
NESTED_CONSOLE_WAIT_S = 20.0


@dataclass(frozen=True)
class Nested:
    """What the guest's own KVM offers (for the report and for skipping suites)."""

    present: bool  # /dev/kvm exists in the guest
    vm_types: tuple[int, ...]  # KVM_CAP_VM_TYPES (0 = default, 1 = SW_PROTECTED ...)
    created: tuple[int, ...]  # the types KVM_CREATE_VM really accepted
    guest_cpu: str
    detail: str

    @property
    def ok(self) -> bool:
        return self.present and 0 in self.created


NOT_PROBED = Nested(False, (), (), "", "not probed")


def console_wait_s(init: str) -> float:
    """How long to wait for the console line: only the lean init prints it."""
    return NESTED_CONSOLE_WAIT_S if init == "lean" else 0


def probe(endpoint: Endpoint) -> Nested:
    """Run the image's probe over SSH."""
    with Remote(endpoint) as remote:
        remote.connect(deadline_s=30)
        ran = remote.run(["python3", "-S", NESTED_PROBE], timeout_s=60)
    if not ran.ok:
        return Nested(False, (), (), "", f"probe failed: {ran.error or ran.stderr.strip()}")
    lines = ran.stdout.strip().splitlines()
    return parse_nested(lines[-1] if lines else "")


def nested_from_console(text: str) -> Nested | None:
    """The lean init's NESTED_MARK line, parsed; None until it has appeared."""
    for line in text.splitlines():
        at = line.find(NESTED_MARK)
        if at >= 0:
            return parse_nested(line[at + len(NESTED_MARK) :])
    return None


def parse_nested(text: str) -> Nested:
    """The probe's JSON line; anything else (a guest printing garbage, a truncated line,
    `"vm_types": ["x"]`) is "no nested KVM" with the text quoted, never an exception:
    the console is the guest's to write, and a boot must not die of what it says."""
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise TypeError(f"a JSON {type(data).__name__}, not an object")
        present = bool(data["present"])
        vm_types = _ints(data.get("vm_types", []))
        created = _ints(data.get("created", []))
    except (ValueError, KeyError, TypeError):
        return Nested(False, (), (), "", f"the probe printed {text[:200]!r}")
    params = ", ".join(f"{k}={v}" for k, v in sorted(data.items()) if str(k).endswith("_nested"))
    parts = [
        f"/dev/kvm {'present' if present else 'absent'}",
        f"guest CPU flag {data.get('virt_flag') or 'none'}",
        params,
        str(data.get("error", "")).strip("; "),
    ]
    return Nested(
        present=present,
        vm_types=vm_types,
        created=created,
        guest_cpu=str(data.get("cpu", "")),
        detail="; ".join(p for p in parts if p)[:500],
    )


def _ints(value: object) -> tuple[int, ...]:
    """A list of VM type numbers; ValueError/TypeError for anything else."""
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise ValueError(f"not a list of integers: {value!r}")
    return tuple(value)
