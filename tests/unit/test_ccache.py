"""ccache figures per build: the stats log parser (on a real log), the summary, and a
real compile showing that another build's compiles in the same cache are not counted."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import ccache

GOLDEN = Path(__file__).parent / "golden" / "ccache" / "hello-4.7.5.statslog"
needs_ccache = pytest.mark.skipif(
    shutil.which("ccache") is None or shutil.which("gcc") is None, reason="no ccache or gcc"
)


def test_summary() -> None:
    counters = {"direct_cache_hit": 30, "preprocessed_cache_hit": 5, "cache_miss": 5}
    s = ccache.summary(counters, 1024)
    assert (s["hits"], s["misses"], s["hit_rate"]) == (35, 5, "87.5%")
    assert s["cache_size_kib"] == 1024 and s["available"] is True
    assert ccache.summary({}, 1024)["hit_rate"] == "n/a (nothing compiled)"
    assert ccache.summary(None, None) == {"available": False}


def test_parse_real_stats_log() -> None:
    # See golden/ccache/SOURCES.md: one miss, a direct and a preprocessed hit, a failed
    # compile, a -E call and a call without input file.
    counts = ccache.parse_stats_log(GOLDEN.read_text())
    assert counts["cache_miss"] == 1
    assert counts["direct_cache_hit"] == 1 and counts["preprocessed_cache_hit"] == 1
    assert counts["compile_failed"] == 1 and counts["no_input_file"] == 1
    assert counts["local_storage_read_hit"] == 3  # bumped twice by the direct hit: counts twice
    assert not any(name.startswith("#") for name in counts)
    s = ccache.summary(counts, None)
    assert (s["hits"], s["misses"], s["hit_rate"]) == (2, 1, "66.7%")


@needs_ccache
def test_parser_agrees_with_ccache_show_log_stats(tmp_path: Path) -> None:
    env = {**os.environ, "CCACHE_DIR": str(tmp_path / "cache"), "LC_ALL": "C"}
    env[ccache.STATS_LOG_VAR] = str(GOLDEN)
    shown = subprocess.run(
        ["ccache", "--show-log-stats"], env=env, capture_output=True, text=True, check=True
    ).stdout
    # "  Hits:   2 / 3 (66.67%)": the first Hits/Misses lines are the cacheable calls'.
    figures = {
        w: re.search(rf"^\s*{w}:\s+(\d+) /", shown, re.MULTILINE) for w in ("Hits", "Misses")
    }
    assert all(figures.values()), shown
    s = ccache.summary(ccache.parse_stats_log(GOLDEN.read_text()), None)
    assert [s["hits"], s["misses"]] == [int(m.group(1)) for m in figures.values() if m]


@needs_ccache
def test_a_real_compile_counts_in_its_own_log_only(tmp_path: Path) -> None:
    (tmp_path / "hello.c").write_text('#include <stdio.h>\nint main(void) { puts("hi"); }\n')
    (tmp_path / "other.c").write_text("int other;\n")
    base = {**os.environ, "CCACHE_DIR": str(tmp_path / "cache"), "LC_ALL": "C"}
    ours = ccache.with_stats_log(base, tmp_path / "ours.ccache-stats.log")
    theirs = ccache.with_stats_log(base, tmp_path / "theirs.ccache-stats.log")

    def compile_(env: dict[str, str], name: str, out: str) -> None:
        argv = ["ccache", "gcc", "-c", name, "-o", out]
        subprocess.run(argv, cwd=tmp_path, env=env, check=True)

    compile_(ours, "hello.c", "hello.o")  # miss
    compile_(theirs, "other.c", "other.o")  # another build, same cache: miss
    compile_(ours, "hello.c", "hello2.o")  # hit
    compile_(base, "other.c", "other2.o")  # a build without a stats log: hit

    s = ccache.build_summary(ours)
    assert (s["hits"], s["misses"]) == (1, 1)
    assert isinstance(s["cache_size_kib"], int)
    assert ccache.build_summary(theirs)["misses"] == 1


@needs_ccache
def test_empty_log_is_nothing_compiled_and_no_log_is_unavailable(tmp_path: Path) -> None:
    base = {**os.environ, "CCACHE_DIR": str(tmp_path / "cache")}
    env = ccache.with_stats_log(base, tmp_path / "logs" / "run.ccache-stats.log")
    assert ccache.read_stats_log(env) == {}
    assert ccache.build_summary(env)["hit_rate"] == "n/a (nothing compiled)"
    assert ccache.read_stats_log(base) is None


def test_ccache_without_stats_log_support_is_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ccache before 4.4 rejects the stats_log key; its figures are unknown, not zero.
    monkeypatch.setattr(ccache, "supports_stats_log", lambda env: False)
    env = ccache.with_stats_log({}, tmp_path / "run.ccache-stats.log")
    assert ccache.read_stats_log(env) is None
    assert ccache.summary(ccache.read_stats_log(env), None) == {"available": False}
