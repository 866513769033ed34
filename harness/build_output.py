"""What the build stage prints: progress lines and the config and build summaries.

`lab build`, `lab run` and the matrix all build through the stage, so the stage prints
(flushed at once, so the lines interleave correctly with make's status line) rather
than each command.
"""

from __future__ import annotations

from collections.abc import Mapping

from harness import kconfig
from harness import kselftest_build as selftests
from harness.manifest import KernelBuild
from harness.source import SourceTree


def say(text: str) -> None:
    print(text, flush=True)


def report_config(cfg: kconfig.KernelConfig, tree: SourceTree) -> None:
    verdict = "ok" if cfg.ok else f"{len(cfg.mismatches)} did not land"
    say(f"  config: {cfg.requested} requested symbols verified: {verdict} (hash {cfg.hash[:12]})")
    if cfg.unknown_symbols:
        names = ", ".join(f"CONFIG_{s}" for s in cfg.unknown_symbols)
        say(f"  warning: {tree.describe} does not define {names} (requested, ignored by Kconfig)")


def report_build(b: KernelBuild, st: selftests.SelftestBuild, cc: Mapping[str, object]) -> None:
    """The finished build; cc is the manifest's ccache record."""
    for name, status in b.selftests.items():
        extra = f": {st.errors[name].splitlines()[0]}" if name in st.errors else ""
        say(f"  selftest {name}: {status}{extra}")
    if b.driver:
        say(f"  driver script: {b.selftests_dir / b.driver}")
    say(f"  ccache: {cc.get('hits')} hits, {cc.get('misses')} misses ({cc.get('hit_rate')})")
    say(f"  durations: {', '.join(f'{k} {v:.1f}s' for k, v in b.durations.items())}")
    say(f"  bzImage: {b.bzimage}")
    say(f"  selftests: {b.selftests_dir}")
