"""The printk timestamp prefix ("[   12.345678] "), in one place.

Console logs, dmesg and KTAP printed through the kernel log all carry it; the crash
scanner strips it, the KTAP parser strips it, and the dmesg bracket compares by it.
"""

from __future__ import annotations

import re

TIMESTAMP = re.compile(r"^\[\s*(\d+\.\d+)\]\s?")


def strip_timestamp(line: str) -> str:
    return TIMESTAMP.sub("", line)


def timestamp(line: str) -> float | None:
    """The seconds since boot a printk line carries, or None."""
    m = TIMESTAMP.match(line)
    return float(m.group(1)) if m else None
