"""Build stage: source -> verified config -> cached out-of-tree kernel + KVM selftests.

Builds live under the cache, keyed by (source identity, final .config hash), so the
matrix can share them and a second `lab build` finds everything up to date. ccache is
shared by all build folders: CCACHE_BASEDIR (the cache root) turns absolute paths into
paths relative to the build folder, and every build folder sits at the same depth, so
a new folder for the same tree still hits the cache. KBUILD_BUILD_TIMESTAMP/USER/HOST
are fixed so two builds of the same inputs produce the same bzImage.

manifest.json records what was built from what, how long each phase took, the ccache
hit rate and how to reproduce it; `lab build` prints its path last.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from harness import ccache, kconfig
from harness import kselftest_build as selftests
from harness.cachelock import locked
from harness.config import LabConfig
from harness.errors import InfraError, LabError, UserError
from harness.paths import cache_dir, cache_root
from harness.proc import TOOL_PACKAGES, run_logged
from harness.source import SourceTree, prepare_source, sha256_file

MANIFEST_VERSION = 1
# A defconfig-sized build without DWARF takes ~3 GiB; keep room for the selftests,
# ccache growth and a second build folder.
MIN_FREE_GIB = 8
BUILD_TOOLS = ("make", "gcc", "ld", "flex", "bison", "bc", "perl", "ccache")
# Headers the kernel build needs (objtool: libelf; module signing / certs: openssl).
BUILD_HEADERS = {
    "/usr/include/gelf.h": "libelf-dev",
    "/usr/include/openssl/opensslv.h": "libssl-dev",
}
FIXED_ENV = {
    "KBUILD_BUILD_TIMESTAMP": "1970-01-01 00:00:00 UTC",
    "KBUILD_BUILD_USER": "gmemlab",
    "KBUILD_BUILD_HOST": "gmemlab",
    # The "#N" in uname -v, otherwise a counter that grows with every relink.
    "KBUILD_BUILD_VERSION": "1",
    "LC_ALL": "C",
}


@dataclass(frozen=True)
class KernelBuild:
    kernel: str
    config_name: str
    build_dir: Path
    bzimage: Path
    vmlinux: Path
    system_map: Path
    config: Path
    config_hash: str
    commit: str
    describe: str
    dirty: bool
    selftests_dir: Path
    # kselftest name (e.g. "x86/private_mem_conversions_test") -> built | absent | failed
    selftests: dict[str, str]
    manifest: Path
    log: Path
    # The tree's conversions driver script, relative to selftests_dir, if it has one.
    driver: str | None = None
    unknown_symbols: tuple[str, ...] = ()
    durations: dict[str, float] = field(default_factory=dict)


def build_kernel(lab: LabConfig, kernel: str, config_name: str) -> KernelBuild:
    """Run source -> config -> build, printing progress; returns the finished build."""
    check_host()
    durations: dict[str, float] = {}
    env = build_env()
    tree, cfg = configure_kernel(lab, kernel, config_name, durations, env)
    kconfig.require_verified(cfg, tree)

    build_dir = build_dir_for(kernel, tree, cfg.hash)
    lock = build_dir.with_name(build_dir.name + ".lock")
    with locked(lock, f"build folder {build_dir.name}"):
        return _build_in(build_dir, kernel, config_name, tree, cfg, durations, env, lab)


def _build_in(
    build_dir: Path,
    kernel: str,
    config_name: str,
    tree: SourceTree,
    cfg: kconfig.KernelConfig,
    durations: dict[str, float],
    env: dict[str, str],
    lab: LabConfig,
) -> KernelBuild:
    obj = build_dir / "obj"
    obj.mkdir(parents=True, exist_ok=True)
    _install_config(cfg.path, obj / ".config")
    log = _new_log(build_dir)
    say(f"  build folder {build_dir}\n  full make log: {log}")

    stats_before = ccache.stats(env)
    jobs = str(os.cpu_count() or 1)
    make = kernel_make(tree.path, obj, jobs)
    manifest = build_dir / "manifest.json"
    try:
        with timed(durations, "kernel"):
            stamp = obj / ".gmemlab-built"
            stamp_text = json.dumps({"make": make, "env": FIXED_ENV, "config": cfg.hash})
            if kernel_up_to_date(tree.path, obj, stamp, stamp_text):
                say(
                    "  build: kernel: up to date (no file in the tree changed since the last build)"
                )
            else:
                started = time.time()
                stamp.unlink(missing_ok=True)
                run_logged(
                    [*make, "bzImage"],
                    log=log,
                    label="build: kernel",
                    env=env,
                    interesting=_kbuild_line,
                )
                stamp.write_text(stamp_text)
                # The start time: an edit made while make ran is seen next time.
                os.utime(stamp, (started, started))
        with timed(durations, "headers"):
            run_logged(
                [*make, "headers_install", f"INSTALL_HDR_PATH={obj / 'usr'}"],
                log=log,
                label="build: headers_install",
                env=env,
                interesting=_kbuild_line,
            )
        with timed(durations, "selftests"):
            wanted = selftests.wanted(lab)
            st = selftests.build(tree.path, obj, build_dir / "selftests", log, env, jobs, wanted)
    except LabError as exc:
        # Like tuxmake: a failed build still leaves a record of what was tried, so a
        # stale "ok" manifest never describes a folder whose artifacts are now mixed.
        failed = {
            "manifest_version": MANIFEST_VERSION,
            "status": "failed",
            "failed_phase": list(durations)[-1],
            "error": exc.what,
            "kernel": kernel,
            "config_name": config_name,
            "source": source_record(tree),
            "config": config_record(cfg),
            "build_dir": str(build_dir),
            "durations_s": durations,
            "ccache": ccache.summary(stats_before, ccache.stats(env)),
            "make_log": str(log),
            "reproduce": reproduce_record(kernel, config_name, make),
        }
        write_manifest(manifest, failed)
        raise
    stats_after = ccache.stats(env)

    result = KernelBuild(
        kernel=kernel,
        config_name=config_name,
        build_dir=build_dir,
        bzimage=obj / "arch" / "x86" / "boot" / "bzImage",
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
        data = manifest_data(result, tree, cfg, st, make, (stats_before, stats_after))
        write_manifest(result.manifest, data)
    _link_latest(build_dir, kernel, config_name)
    report_build(result, st, data)
    return result


def configure_kernel(
    lab: LabConfig,
    kernel: str,
    config_name: str,
    durations: dict[str, float] | None = None,
    env: dict[str, str] | None = None,
) -> tuple[SourceTree, kconfig.KernelConfig]:
    """The source and config stages (`lab build --config-only` stops here)."""
    if config_name not in lab.configs:
        known = ", ".join(sorted(lab.configs))
        raise UserError(
            f"unknown config set {config_name!r} (known: {known})",
            "pass --config with a name from configs: in lab.yaml",
        )
    spec = lab.configs[config_name]
    durations = {} if durations is None else durations
    env = build_env() if env is None else env
    say(f"build {kernel}/{config_name}: source")
    with timed(durations, "source"):
        tree = prepare_source(lab, kernel)
    say(f"  tree {tree.path} ({tree.describe}{', dirty' if tree.dirty else ''})")
    say(f"build {kernel}/{config_name}: config {spec.base} + {', '.join(spec.fragments)}")
    fragments = tuple(lab.fragment_path(f) for f in spec.fragments)
    with timed(durations, "config"):
        cfg_dir = cache_dir("configs", kconfig.inputs_key(tree, spec.base, fragments)[:16])
        with locked(cfg_dir.with_name(cfg_dir.name + ".lock"), f"config {cfg_dir.name}"):
            cfg = kconfig.configure(tree, spec.base, fragments, cfg_dir, env=env)
    report_config(cfg, tree)
    return tree, cfg


# --- host checks and environment -----------------------------------------------------


def check_host() -> None:
    """All missing tools and headers in one message, then the disk space."""
    missing = [t for t in BUILD_TOOLS if shutil.which(t) is None]
    packages = {TOOL_PACKAGES.get(t, _TOOL_EXTRA.get(t, t)) for t in missing}
    missing_headers = [h for h in BUILD_HEADERS if not Path(h).is_file()]
    packages |= {BUILD_HEADERS[h] for h in missing_headers}
    if missing or missing_headers:
        raise UserError(
            f"missing build tools: {', '.join(missing + missing_headers)}",
            f"install the Debian packages {' '.join(sorted(packages))} (or run `make deps`)",
        )
    free = shutil.disk_usage(cache_root()).free
    if free < MIN_FREE_GIB << 30:
        raise InfraError(
            f"only {free / (1 << 30):.1f} GiB free under {cache_root()}; a kernel build "
            f"needs about {MIN_FREE_GIB} GiB",
            "free some space (old folders under builds/ can go) or point LAB_CACHE elsewhere",
        )


_TOOL_EXTRA = {"ld": "binutils", "perl": "perl"}


def build_env() -> dict[str, str]:
    root = cache_root()
    return {
        **os.environ,
        **FIXED_ENV,
        "CCACHE_DIR": str(cache_dir("ccache")),
        # Absolute paths under the cache become relative to the build folder, and the
        # build folder itself is not hashed: a new folder reuses the cache.
        "CCACHE_BASEDIR": str(root),
        "CCACHE_NOHASHDIR": "1",
        "CCACHE_COMPILERCHECK": "content",
        "CCACHE_MAXSIZE": os.environ.get("CCACHE_MAXSIZE", "10G"),
    }


def kernel_make(src: Path, obj: Path, jobs: str) -> list[str]:
    return [
        "make",
        "-C",
        str(src),
        f"O={obj}",
        f"-j{jobs}",
        "CC=ccache gcc",
        "HOSTCC=ccache gcc",
    ]


def build_dir_for(kernel: str, tree: SourceTree, config_hash: str) -> Path:
    """builds/<kernel>-<key>, keyed by (tree, final .config hash).

    Every build folder sits at the same depth under the cache (see CCACHE_BASEDIR).
    """
    key = hashlib.sha256(f"{tree.build_key}\0{config_hash}".encode()).hexdigest()[:16]
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in kernel)[-40:]
    return cache_dir("builds") / f"{safe}-{key}"


def _new_log(build_dir: Path) -> Path:
    """A log per run (logs/build-<UTC time>.log); build.log points at the newest.

    Another process's run (e.g. `lab run` after `lab build`) must not erase the log
    of the run that really compiled something.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    log = build_dir / "logs" / f"build-{stamp}-{os.getpid()}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    link = build_dir / "build.log"
    tmp = link.with_name("build.log.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(log.relative_to(build_dir))
    tmp.replace(link)
    return log


def kernel_up_to_date(src: Path, obj: Path, stamp: Path, stamp_text: str) -> bool:
    """True when the last kernel build succeeded with these settings and no file in the
    tree is newer than it.

    Kbuild would conclude the same, but its walk over every directory takes 15-30 s on
    two cores; a stat of the tree takes about one. make uses mtimes too, so this misses
    nothing make would have caught (an edit, a touch, a new file).
    """
    try:
        if stamp.read_text() != stamp_text:
            return False
        built = stamp.stat().st_mtime_ns
    except FileNotFoundError:
        return False
    needed = (obj / "arch/x86/boot/bzImage", obj / "vmlinux", obj / "System.map")
    if not all(p.is_file() for p in needed) or (obj / ".config").stat().st_mtime_ns > built:
        return False
    return not _newer_file(src, built)


def _newer_file(root: Path, than_ns: int) -> bool:
    stack = [str(root)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name != ".git":
                        stack.append(entry.path)
                elif entry.stat(follow_symlinks=False).st_mtime_ns > than_ns:
                    return True
    return False


def _install_config(src: Path, dst: Path) -> None:
    # Only copy when it differs: a new mtime on .config makes kbuild re-run syncconfig.
    if not dst.is_file() or dst.read_bytes() != src.read_bytes():
        shutil.copyfile(src, dst)


def _kbuild_line(line: str) -> bool:
    # Kbuild's quiet output: "  CC      kernel/fork.o"; the status line shows the target.
    return line.startswith("  ") and line[2:3].isupper()


def _link_latest(build_dir: Path, kernel: str, config_name: str) -> None:
    link = build_dir.parent / f"latest-{build_dir.name.rsplit('-', 1)[0]}-{config_name}"
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


def say(text: str) -> None:
    print(text, flush=True)


# --- manifest ------------------------------------------------------------------------


def artifact(path: Path, root: Path) -> dict[str, object]:
    return {
        "path": str(path.relative_to(root)) if path.is_relative_to(root) else str(path),
        "size": path.stat().st_size,
        "sha256": sha256_file(path),
    }


def manifest_data(
    b: KernelBuild,
    tree: SourceTree,
    cfg: kconfig.KernelConfig,
    st: selftests.SelftestBuild,
    make: list[str],
    stats: tuple[dict[str, int], dict[str, int]],
) -> dict[str, object]:
    artifacts = {
        "bzImage": artifact(b.bzimage, b.build_dir),
        "vmlinux": artifact(b.vmlinux, b.build_dir),
        "System.map": artifact(b.system_map, b.build_dir),
        ".config": artifact(b.config, b.build_dir),
    }
    tests: dict[str, object] = {}
    for name, status in b.selftests.items():
        entry: dict[str, object] = {"status": status}
        if status == "built":
            entry.update(artifact(b.selftests_dir / name, b.build_dir))
        if name in st.errors:
            entry["log_excerpt"] = st.errors[name]
        tests[name] = entry
    return {
        "manifest_version": MANIFEST_VERSION,
        "status": "ok",
        "kernel": b.kernel,
        "config_name": b.config_name,
        "source": source_record(tree),
        "config": config_record(cfg),
        "build_dir": str(b.build_dir),
        "artifacts": artifacts,
        "selftests_dir": str(b.selftests_dir),
        "selftests": tests,
        "driver": b.driver,
        "durations_s": b.durations,
        "ccache": ccache.summary(*stats),
        "compiler": kconfig.compiler_id(),
        "make_log": str(b.log),
        "reproduce": reproduce_record(b.kernel, b.config_name, make),
    }


def source_record(tree: SourceTree) -> dict[str, object]:
    return {
        "kind": tree.kind,
        "origin": tree.origin,
        "path": str(tree.path),
        "commit": tree.commit,
        "describe": tree.describe,
        "dirty": tree.dirty,
        "diff_sha256": tree.diff_sha256,
        "base": tree.base,
    }


def config_record(cfg: kconfig.KernelConfig) -> dict[str, object]:
    return {
        "base": cfg.base,
        "fragments": [{"name": f.name, "sha256": sha256_file(f)} for f in cfg.fragments],
        "hash": cfg.hash,
        "verification": cfg.verification(),
    }


def reproduce_record(kernel: str, config_name: str, make: list[str]) -> dict[str, str]:
    env_words = [f"{k}={v!r}" for k, v in FIXED_ENV.items() if k != "LC_ALL"]
    return {
        "lab": f"lab build --kernel {kernel} --config {config_name}",
        "make": " ".join([*env_words, *make, "bzImage"]),
    }


def write_manifest(path: Path, data: dict[str, object]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


def load_build(manifest: Path) -> KernelBuild:
    """A KernelBuild from a manifest.json written by build_kernel."""
    try:
        data = json.loads(manifest.read_text())
    except FileNotFoundError:
        raise UserError(f"no manifest at {manifest}", "run `lab build` first") from None
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{manifest} is not valid JSON: {exc}", "rebuild with `lab build`"
        ) from None
    if data.get("manifest_version") != MANIFEST_VERSION or data.get("status") != "ok":
        raise UserError(
            f"{manifest} is not a finished build (status {data.get('status')!r})",
            "rebuild with `lab build`",
        )
    root = Path(data["build_dir"])
    art = data["artifacts"]

    def at(name: str) -> Path:
        return root / str(art[name]["path"])

    return KernelBuild(
        kernel=data["kernel"],
        config_name=data["config_name"],
        build_dir=root,
        bzimage=at("bzImage"),
        vmlinux=at("vmlinux"),
        system_map=at("System.map"),
        config=at(".config"),
        config_hash=data["config"]["hash"],
        commit=data["source"]["commit"],
        describe=data["source"]["describe"],
        dirty=data["source"]["dirty"],
        selftests_dir=Path(data["selftests_dir"]),
        selftests={k: v["status"] for k, v in data["selftests"].items()},
        manifest=manifest,
        log=Path(data["make_log"]),
        driver=data.get("driver"),
        unknown_symbols=tuple(data["config"]["verification"]["unknown_to_tree"]),
        durations=dict(data["durations_s"]),
    )


# --- terminal output -----------------------------------------------------------------


def report_config(cfg: kconfig.KernelConfig, tree: SourceTree) -> None:
    verdict = "ok" if cfg.ok else f"{len(cfg.mismatches)} did not land"
    say(f"  config: {cfg.requested} requested symbols verified: {verdict} (hash {cfg.hash[:12]})")
    if cfg.unknown_symbols:
        names = ", ".join(f"CONFIG_{s}" for s in cfg.unknown_symbols)
        say(f"  warning: {tree.describe} does not define {names} (requested, ignored by Kconfig)")


def report_build(b: KernelBuild, st: selftests.SelftestBuild, data: dict[str, object]) -> None:
    for name, status in b.selftests.items():
        extra = f": {st.errors[name].splitlines()[0]}" if name in st.errors else ""
        say(f"  selftest {name}: {status}{extra}")
    if b.driver:
        say(f"  driver script: {b.selftests_dir / b.driver}")
    cc = data["ccache"]
    assert isinstance(cc, dict)
    say(f"  ccache: {cc.get('hits')} hits, {cc.get('misses')} misses ({cc.get('hit_rate')})")
    say(f"  durations: {', '.join(f'{k} {v:.1f}s' for k, v in b.durations.items())}")
    say(f"  bzImage: {b.bzimage}")
    say(f"  selftests: {b.selftests_dir}")
