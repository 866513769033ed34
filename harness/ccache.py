"""ccache statistics per build, so the manifest says how much of *this* make came from
the cache.

The cache and its global counters are shared by every build folder, and the matrix or a
developer's `lab build` may compile beside this build: a before/after difference of the
global counters would count their compiles too. ccache's stats log (CCACHE_STATSLOG,
ccache >= 4.4) instead records each invocation made with that setting in one file, so a
fresh file per run holds this run's compiles and nothing else.

The log is read here rather than through `ccache --show-log-stats`: that prints only a
human-readable table in ccache 4.7/4.8, while the log itself is plain text, one
"# <input file>" line per invocation followed by one line per counter it bumped.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

STATS_LOG_VAR = "CCACHE_STATSLOG"
# Counters (ccache --print-stats names) that mean "a compilation was answered".
HIT_KEYS = ("direct_cache_hit", "preprocessed_cache_hit")
MISS_KEYS = ("cache_miss",)


def with_stats_log(env: Mapping[str, str], log: Path) -> dict[str, str]:
    """env plus the stats log setting; the log starts empty, so it holds only this run."""
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    return {**env, STATS_LOG_VAR: str(log)}


def supports_stats_log(env: Mapping[str, str]) -> bool:
    """Whether this ccache writes stats logs (an older one rejects the config key)."""
    done = subprocess.run(
        ["ccache", "--get-config", "stats_log"],
        env=dict(env),
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode == 0


def parse_stats_log(text: str) -> Counter[str]:
    """How often each counter was bumped, summed over the log's invocations."""
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        name = line.strip()
        if name and not name.startswith("#"):
            counts[name] += 1
    return counts


def read_stats_log(env: Mapping[str, str]) -> Counter[str] | None:
    """The counters of env's stats log; None when there is none to read (no stats log
    set, or a ccache too old to write one)."""
    log = env.get(STATS_LOG_VAR)
    if not log or not supports_stats_log(env):
        return None
    try:
        return parse_stats_log(Path(log).read_text())
    except FileNotFoundError:
        # Set and supported, but nothing went through ccache: nothing was compiled.
        return Counter()


def cache_size_kib(env: Mapping[str, str]) -> int | None:
    """The size of the whole cache (a property of the cache, not of one build)."""
    done = subprocess.run(
        ["ccache", "--print-stats"], env=dict(env), capture_output=True, text=True, check=False
    )
    for line in done.stdout.splitlines():
        key, _, value = line.partition("\t")
        if key == "cache_size_kibibyte" and value.strip().isdigit():
            return int(value)
    return None


def summary(counters: Mapping[str, int] | None, size_kib: int | None) -> dict[str, object]:
    """Hits, misses (= compiler runs) and the hit rate of one build's counters."""
    if counters is None:
        return {"available": False}
    hits = sum(counters.get(k, 0) for k in HIT_KEYS)
    misses = sum(counters.get(k, 0) for k in MISS_KEYS)
    calls = hits + misses
    return {
        "available": True,
        "hits": hits,
        "misses": misses,
        "hit_rate": f"{100 * hits / calls:.1f}%" if calls else "n/a (nothing compiled)",
        "cache_size_kib": size_kib,
    }


def build_summary(env: Mapping[str, str]) -> dict[str, object]:
    """The manifest's "ccache" record for the make runs that used env."""
    return summary(read_stats_log(env), cache_size_kib(env))
