"""Build stage: a BuildRequest (a source tree and a config set) -> a KernelBuild.

config -> verified .config -> kernel image -> uapi headers -> KVM selftests ->
manifest.json, in a build folder under the cache keyed by (source identity, final
.config hash), so the matrix can share builds and a second `lab build` finds everything
up to date. prepare_request turns a lab.yaml kernel and config set into a request (it
runs the source stage); `lab build` prints the manifest's path last.

The pieces live beside it: hostcheck (can this host build), kmake (make, its
environment and the up-to-date shortcut), manifest (the result and its record),
ccache (this build's hit figures) and build_output (what the stage prints).
"""

from __future__ import annotations

import hashlib
import os
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from harness import arch, buildlog, ccache, kconfig, kmake, names
from harness import kselftest_build as selftests
from harness.build_output import report_build, report_config, say
from harness.cachelock import locked
from harness.config import LabConfig
from harness.errors import Finding, LabError, TreeError, UserError
from harness.hostcheck import check_host
from harness.manifest import (
    Attempt,
    KernelBuild,
    failed_data,
    load_build,
    manifest_data,
    write_manifest,
)
from harness.paths import cache_dir
from harness.source import SourceTree, prepare_source

# KernelBuild and load_build are the stage's result type and its loader: callers that
# build or reuse a build import them from here.
__all__ = [
    "BuildRequest",
    "KernelBuild",
    "build_dir_for",
    "build_kernel",
    "configure",
    "configure_kernel",
    "load_build",
    "prepare_request",
]


def _cpu_count() -> int:
    return os.cpu_count() or 1


@dataclass(frozen=True)
class BuildRequest:
    """What to build, by value: a prepared source tree and a config set (no LabConfig)."""

    kernel: str  # the lab.yaml kernel name or path: names the folder and the reproducer
    config_name: str
    tree: SourceTree
    base: str  # the make target the config starts from (defconfig, ...)
    fragments: tuple[Path, ...]
    jobs: int = field(default_factory=_cpu_count)
    # The source stage's time, so the manifest's durations still cover the whole build.
    source_seconds: float = 0.0
    # The KVM selftests to build: lab.yaml's kselftest suites name them (one list).
    selftests: tuple[str, ...] = ()


def prepare_request(lab: LabConfig, kernel: str, config_name: str) -> BuildRequest:
    """The request for a lab.yaml kernel and config set.

    Checks the host first, so a missing tool is named before a fetch that can take
    minutes, then runs the source stage.
    """
    check_host()
    return _sourced(lab, kernel, config_name)


def configure_kernel(
    lab: LabConfig, kernel: str, config_name: str
) -> tuple[SourceTree, kconfig.KernelConfig]:
    """The source and config stages (`lab build --config-only` stops here)."""
    request = _sourced(lab, kernel, config_name)
    return request.tree, configure(request, {}, kmake.build_env())


def _sourced(lab: LabConfig, kernel: str, config_name: str) -> BuildRequest:
    if config_name not in lab.configs:
        known = ", ".join(sorted(lab.configs))
        raise UserError(
            f"unknown config set {config_name!r} (known: {known})",
            "pass --config with a name from configs: in lab.yaml",
        )
    spec = lab.configs[config_name]
    durations: dict[str, float] = {}
    say(f"build {kernel}/{config_name}: source")
    with timed(durations, "source"):
        tree = prepare_source(lab, kernel)
    say(f"  tree {tree.path} ({tree.describe}{', dirty' if tree.dirty else ''})")
    return BuildRequest(
        kernel=kernel,
        config_name=config_name,
        tree=tree,
        base=spec.base,
        fragments=tuple(lab.fragment_path(f) for f in spec.fragments),
        source_seconds=durations["source"],
        selftests=selftests.wanted(lab),
    )


def configure(
    request: BuildRequest, durations: dict[str, float], env: dict[str, str]
) -> kconfig.KernelConfig:
    """The config stage for request (cached by its inputs), timed into durations."""
    tree, base, fragments = request.tree, request.base, request.fragments
    names = ", ".join(f.name for f in fragments)
    say(f"build {request.kernel}/{request.config_name}: config {base} + {names}")
    with timed(durations, "config"):
        cfg_dir = cache_dir("configs", kconfig.inputs_key(tree, base, fragments)[:16])
        with locked(cfg_dir.with_name(cfg_dir.name + ".lock"), f"config {cfg_dir.name}"):
            cfg = kconfig.configure(tree, base, fragments, cfg_dir, env=env)
    report_config(cfg, tree)
    return cfg


def build_kernel(request: BuildRequest) -> KernelBuild:
    """config -> make -> headers -> selftests -> manifest, printing progress.

    The host was checked by prepare_request; a request made by hand skips that check
    (tests, and callers that checked themselves).
    """
    durations = {"source": request.source_seconds}
    env = kmake.build_env()
    cfg = configure(request, durations, env)
    kconfig.require_verified(cfg, request.tree)

    build_dir = build_dir_for(request.kernel, request.tree, cfg.hash)
    lock = build_dir.with_name(build_dir.name + ".lock")
    with locked(lock, f"build folder {build_dir.name}"):
        return _build_in(build_dir, request, cfg, durations, env)


def _build_in(
    build_dir: Path,
    request: BuildRequest,
    cfg: kconfig.KernelConfig,
    durations: dict[str, float],
    env: dict[str, str],
) -> KernelBuild:
    tree = request.tree
    obj = build_dir / "obj"
    obj.mkdir(parents=True, exist_ok=True)
    kmake.install_config(cfg.path, obj / ".config")
    log = kmake.new_log(build_dir)
    say(f"  build folder {build_dir}\n  full make log: {log}")

    # This run's ccache figures only: another build may share the cache meanwhile.
    env = ccache.with_stats_log(env, log.with_suffix(".ccache-stats.log"))
    jobs = str(request.jobs)
    make = kmake.kernel_make(tree.path, obj, request.jobs)
    ran = Attempt(
        kernel=request.kernel,
        config_name=request.config_name,
        tree=tree,
        cfg=cfg,
        build_dir=build_dir,
        make=make,
        log=log,
    )
    manifest = build_dir / "manifest.json"
    try:
        with timed(durations, "kernel"):
            if not kmake.make_image(make, tree.path, obj, cfg.hash, log, env):
                say(
                    "  build: kernel: up to date (no file in the tree changed since the last build)"
                )
        with timed(durations, "headers"):
            kmake.install_headers(make, obj, log, env)
        with timed(durations, "selftests"):
            st = selftests.build(
                tree.path, obj, build_dir / "selftests", log, env, jobs, request.selftests
            )
    except LabError as exc:
        # The kernel's own make failed: the tree's fault (a finding) or the machine's?
        failure = None
        if not isinstance(exc, TreeError) and list(durations)[-1] in ("kernel", "headers"):
            failure = buildlog.classify_file(log)
        failed = failed_data(exc.what, ran, durations, ccache.build_summary(env))
        if failure is not None:
            failed["failure"] = {"tree": failure.tree, "reason": failure.reason,
                                 "excerpt": failure.excerpt}  # fmt: skip
        write_manifest(manifest, failed)
        if failure is not None and failure.tree:
            raise TreeError(
                f"{request.kernel}/{request.config_name}: {failure.reason}\n"
                + textwrap.indent(failure.excerpt, "    "),
                f"read the full log: {log}",
                findings=(Finding("build", "kernel", failure.reason, failure.excerpt, log),),
            ) from exc
        raise
    cc = ccache.build_summary(env)

    result = KernelBuild(
        kernel=request.kernel,
        config_name=request.config_name,
        build_dir=build_dir,
        bzimage=obj / arch.HOST.kernel_image_path,
        vmlinux=obj / "vmlinux",
        system_map=obj / "System.map",
        config=obj / ".config",
        config_hash=cfg.hash,
        commit=tree.commit,
        describe=tree.describe,
        dirty=tree.dirty,
        selftests_dir=st.out_dir,
        selftests=dict(st.status),
        manifest=manifest,
        log=log,
        driver=st.driver,
        unknown_symbols=cfg.unknown_symbols,
        durations=durations,
    )
    with timed(durations, "manifest"):
        write_manifest(result.manifest, manifest_data(result, ran, st, cc))
    _link_latest(build_dir, request.kernel, request.config_name)
    report_build(result, st, cc)
    return result


def build_dir_for(kernel: str, tree: SourceTree, config_hash: str) -> Path:
    """builds/<kernel>-<key>, keyed by (tree, final .config hash).

    Every build folder sits at the same depth under the cache (see kmake: CCACHE_BASEDIR);
    a series' tree (harness/patchset.py) builds at the same depth beside its worktree.
    """
    key = hashlib.sha256(f"{tree.build_key}\0{config_hash}".encode()).hexdigest()[:16]
    root = tree.build_root or cache_dir("builds")
    root.mkdir(parents=True, exist_ok=True)
    return root / names.build_folder(kernel, key)


def _link_latest(build_dir: Path, kernel: str, config_name: str) -> None:
    link = build_dir.parent / names.latest_link(kernel, config_name)
    tmp = link.with_name(link.name + ".tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(build_dir.name)
    tmp.replace(link)


@contextmanager
def timed(durations: dict[str, float], phase: str) -> Iterator[None]:
    start = time.monotonic()
    try:
        yield
    finally:
        durations[phase] = round(time.monotonic() - start, 2)
