"""The guest probe's feature names, for lab.yaml's `kernels.<name>.expect`.

The probe (tests/guest/kvm/probe.py, run in the guest as tests/guest/probe.py) prints
its Features as JSON; every true-or-false entry there is a feature a kernel can be
expected to have. Each name maps to the probe's entries that explain its answer (an
errno, a module parameter), quoted when an expected feature is absent.
tests/unit/test_expect.py keeps this table equal to the probe's boolean entries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_PARAMS = ("vm_memory_attributes_param", "gmem_in_place_conversion_param")

# feature -> the probe entries that say why it is present or absent
FEATURES: dict[str, tuple[str, ...]] = {
    "kvm": ("kvm_error",),
    "guest_memfd": ("kvm_error",),
    "attrs2": ("attrs2_gmem_errno", "attrs2_vm_errno", *_PARAMS),
    "attrs2_gmem": ("attrs2_gmem_errno", *_PARAMS),
    "attrs2_vm": ("attrs2_vm_errno", *_PARAMS),
    "per_gmem_attributes": ("attrs2_gmem_errno", *_PARAMS),
    "sw_protected": ("vm_types",),
    "vcpus_run": ("vcpus_run_reason",),
    "gup_test": (),
}


def check_name(name: str) -> str:
    """name if the probe knows it, else a ValueError listing the names it knows."""
    if name not in FEATURES:
        raise ValueError(
            f"{name!r} is not a feature the guest probe reports (known: {', '.join(FEATURES)})"
        )
    return name


def evidence(feature: str, probed: Mapping[str, Any]) -> str:
    """What the probe said about feature: its related entries, the guest kernel and any
    probe step that failed, as one line."""
    parts = [f"{feature}={probed.get(feature)}"]
    for key in FEATURES.get(feature, ()):
        value = probed.get(key)
        # A module parameter that does not exist (None) is evidence too.
        if key in probed and (value not in ("", None, [], {}) or key.endswith("_param")):
            parts.append(f"{key}={value}")
    if probed.get("kernel"):
        parts.append(f"kernel {probed['kernel']}")
    errors = probed.get("probe_errors") or []
    if errors:
        parts.append("probe errors: " + "; ".join(str(e) for e in errors))
    return ", ".join(parts)
