"""Import the guest suite's modules (tests/guest/kvm) from the harness's unit tests.

The guest suite is a payload with its own import root (tests/guest), not part of the
harness package, so its folder goes on sys.path once.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

GUEST_DIR = Path(__file__).resolve().parents[1] / "guest"


def load(name: str) -> ModuleType:
    if str(GUEST_DIR) not in sys.path:
        sys.path.insert(0, str(GUEST_DIR))
    return importlib.import_module(name)
