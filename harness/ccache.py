"""ccache statistics, so the manifest can say how much of a build came from the cache."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping

# Counters (ccache --print-stats names) that mean "a compilation was answered".
HIT_KEYS = ("direct_cache_hit", "preprocessed_cache_hit")
MISS_KEYS = ("cache_miss",)


def stats(env: Mapping[str, str]) -> dict[str, int]:
    """The machine-readable counters of the lab's ccache (empty if ccache is too old)."""
    done = subprocess.run(
        ["ccache", "--print-stats"], env=dict(env), capture_output=True, text=True, check=False
    )
    counters: dict[str, int] = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition("\t")
        if value.strip().isdigit():
            counters[key] = int(value)
    return counters


def summary(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, object]:
    """Hits, misses (= compiler runs) and the hit rate between two snapshots."""
    if not after:
        return {"available": False}

    def delta(keys: tuple[str, ...]) -> int:
        return sum(after.get(k, 0) - before.get(k, 0) for k in keys)

    hits, misses = delta(HIT_KEYS), delta(MISS_KEYS)
    calls = hits + misses
    return {
        "available": True,
        "hits": hits,
        "misses": misses,
        "hit_rate": f"{100 * hits / calls:.1f}%" if calls else "n/a (nothing compiled)",
        "cache_size_kib": after.get("cache_size_kibibyte"),
    }
