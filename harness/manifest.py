"""The build's result and its record on disk: KernelBuild and manifest.json.

manifest.json records what was built from what, how long each phase took, the ccache
hit rate and how to reproduce it; `lab run --manifest` and the matrix load a finished
build back from it without building.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from harness import arch, kconfig
from harness import kselftest_build as selftests
from harness.digest import sha256_file
from harness.errors import UserError
from harness.kmake import FIXED_ENV
from harness.source import SourceTree

MANIFEST_VERSION = 1
# The phases that are make runs; the run's time accounting calls their sum "make".
MAKE_PHASES = ("config", "kernel", "headers", "selftests")


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

    @property
    def make_seconds(self) -> float:
        """Seconds spent in make (config, kernel, headers, selftests); 0 for a build
        loaded from a manifest that recorded none."""
        return float(sum(v for k, v in self.durations.items() if k in MAKE_PHASES))


@dataclass(frozen=True)
class Attempt:
    """What a build ran with: its manifest records it whether the build finished or
    failed."""

    kernel: str
    config_name: str
    tree: SourceTree
    cfg: kconfig.KernelConfig
    build_dir: Path
    make: list[str]  # the kernel's make command line, without its target
    log: Path


def artifact(path: Path, root: Path) -> dict[str, object]:
    return {
        "path": str(path.relative_to(root)) if path.is_relative_to(root) else str(path),
        "size": path.stat().st_size,
        "sha256": sha256_file(path),
    }


def manifest_data(
    b: KernelBuild, ran: Attempt, st: selftests.SelftestBuild, cc: dict[str, object]
) -> dict[str, object]:
    """A finished build's record; cc is ccache.build_summary of this build's make runs."""
    artifacts = {
        # The key is the manifest format's name for the kernel image on every arch.
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
        "source": source_record(ran.tree),
        # A series from mail: per patch subject, Message-ID, status (KCIDB reads these).
        "patches": list(ran.tree.patches),
        "config": config_record(ran.cfg),
        "build_dir": str(b.build_dir),
        "artifacts": artifacts,
        "selftests_dir": str(b.selftests_dir),
        "selftests": tests,
        "driver": b.driver,
        "durations_s": b.durations,
        "ccache": cc,
        "compiler": kconfig.compiler_id(),
        "make_log": str(b.log),
        "reproduce": reproduce_record(b.kernel, b.config_name, ran.make),
    }


def failed_data(
    error: str, ran: Attempt, durations: dict[str, float], cc: dict[str, object]
) -> dict[str, object]:
    """A failed build's record (the last timed phase is the one that failed).

    Like tuxmake: a failed build still leaves a record of what was tried, so a stale
    "ok" manifest never describes a folder whose artifacts are now mixed.
    """
    return {
        "manifest_version": MANIFEST_VERSION,
        "status": "failed",
        "failed_phase": list(durations)[-1],
        "error": error,
        "kernel": ran.kernel,
        "config_name": ran.config_name,
        "source": source_record(ran.tree),
        "patches": list(ran.tree.patches),
        "config": config_record(ran.cfg),
        "build_dir": str(ran.build_dir),
        "durations_s": durations,
        "ccache": cc,
        "make_log": str(ran.log),
        "reproduce": reproduce_record(ran.kernel, ran.config_name, ran.make),
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
        # mbox kernels: the series' sha256 and its patches (also top level, below).
        "mbox_sha256": tree.mbox_sha256,
        "patches": list(tree.patches),
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
        "make": " ".join([*env_words, *make, arch.HOST.kernel_image]),
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
