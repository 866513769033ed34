"""Source kind `deb`: a Debian source package (linux-source-*), downloaded through a
private apt configuration under the cache (no root, no change to the system's sources)
and unpacked once."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from harness import aptsources, names
from harness.config import DebSource, KernelSource, LabConfig
from harness.digest import sha256_file
from harness.errors import InfraError, UserError
from harness.paths import cache_dir
from harness.proc import require_tools, run_logged
from harness.source.tree import SourceTree, check_kernel_tree

UNPACKED_MARK = ".gmemlab-unpacked"


def apt_options(base: Path) -> list[str]:
    """apt -o options that keep every list, cache and source under `base`."""
    etc = base / "etc"
    return [
        "-o",
        f"Dir::Etc::sourcelist={etc / 'sources.list'}",
        "-o",
        "Dir::Etc::sourceparts=-",
        # System pins must not hide or prefer a version of our package.
        "-o",
        f"Dir::Etc::preferences={etc / 'preferences'}",
        "-o",
        f"Dir::Etc::preferencesparts={etc / 'preferences.d'}",
        "-o",
        f"Dir::State::Lists={base / 'lists'}",
        "-o",
        f"Dir::Cache={base / 'cache'}",
        "-o",
        "APT::Get::List-Cleanup=0",
    ]


def sources_line(spec: DebSource, mirror: str) -> str:
    """The private sources.list's one line.

    Every field was held to a narrow pattern at load (config.checks.DebWord, Mirror,
    AbsPath): none can hold a space or a bracket, so none can add a field or an
    [option]. Checked again here because the mirror may come from the host's apt
    sources instead.
    """
    if not aptsources.MIRROR.fullmatch(mirror):
        raise UserError(
            f"mirror {mirror!r} is not a plain http(s):// or file:// URL",
            "set kernels.<name>.deb.mirror in lab.yaml to your Debian mirror's URL",
        )
    return f"deb [signed-by={spec.keyring}] {mirror} {spec.suite} main\n"


def _write_apt_config(base: Path, spec: DebSource, mirror: str) -> None:
    for sub in ("etc/preferences.d", "lists/partial", "cache/archives/partial"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    (base / "etc" / "preferences").touch()
    (base / "etc" / "sources.list").write_text(sources_line(spec, mirror))


def from_deb(name: str, spec: DebSource) -> SourceTree:
    require_tools("apt-get", "dpkg-deb", "tar", "xz")
    if not Path(spec.keyring).is_file():
        raise UserError(
            f"apt keyring {spec.keyring} not found (needed to verify {spec.suite})",
            "install the Debian package debian-archive-keyring",
        )
    # lab.yaml's mirror, else the one this machine's apt sources use (no archive host
    # is named in the lab: a machine behind a local mirror keeps using it).
    mirror = spec.mirror or aptsources.host_mirror()
    base = cache_dir("sources", "deb", spec.suite)
    _write_apt_config(base, spec, mirror)
    opts = apt_options(base)
    log = base / "apt.log"
    updated = run_logged(
        ["apt-get", *opts, "-q", "update"],
        log=log,
        label=f"source {name}: apt-get update",
        check=False,
    )
    if updated.returncode != 0:
        # Offline after a first fetch: the lists from last time still name a version
        # whose package (and unpacked tree) is in the cache.
        if not any((base / "lists").glob("*_Packages*")):
            raise UserError(
                f"apt-get update for {mirror} {spec.suite} failed (log: {log})",
                "check the network path to the Debian mirror, or build a local tree "
                "with `lab build --kernel /path/to/linux`",
            )
        print(f"  warning: apt-get update failed; using the package lists from last time ({log})")
    version = _candidate_version(opts, spec.package)
    if version is None:
        raise UserError(
            f"package {spec.package} not found in {mirror} {spec.suite}",
            "check kernels.*.deb.package and suite in lab.yaml",
        )
    safe_version = version.replace(":", "%3a")
    downloads = cache_dir("sources", "deb", "debs")
    deb = downloads / f"{spec.package}_{safe_version}_all.deb"
    if not deb.is_file():
        run_logged(
            ["apt-get", *opts, "-q", "download", f"{spec.package}={version}"],
            log=log,
            label=f"source {name}: apt-get download {spec.package}",
            cwd=downloads,
        )
    if not deb.is_file():
        found = sorted(downloads.glob(f"{spec.package}_*.deb"))
        raise InfraError(f"apt-get download left no {deb.name} (found {found})", f"see {log}")
    # Versions hold "~" and "+": keep them out of the path make and the compiler see.
    folder = names.slug(f"{spec.package}_{version}", max_len=120)
    tree = _unpack_deb(deb, cache_dir("sources", "deb", "trees") / folder)
    check_kernel_tree(tree, f"{spec.package} {version}")
    return SourceTree(
        name=name,
        kind="deb",
        path=tree,
        commit=f"deb-{spec.package}_{version}",
        describe=f"{spec.package} {version}",
        origin=f"{mirror} {spec.suite} {spec.package}={version} sha256:{sha256_file(deb)}",
    )


def _candidate_version(opts: list[str], package: str) -> str | None:
    out = subprocess.run(
        ["apt-cache", *opts, "policy", package], capture_output=True, text=True, check=False
    ).stdout
    m = re.search(r"Candidate:\s*(\S+)", out)
    return m.group(1) if m and m.group(1) != "(none)" else None


def _unpack_deb(deb: Path, dest: Path) -> Path:
    """Unpack the package and its /usr/src tarball once; a marker says it finished."""
    if (dest / UNPACKED_MARK).is_file():
        return Path((dest / UNPACKED_MARK).read_text().strip())
    shutil.rmtree(dest, ignore_errors=True)
    staging = dest.with_name(dest.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    log = dest.with_name(dest.name + ".log")
    run_logged(["dpkg-deb", "-x", deb, staging / "pkg"], log=log, label="source: dpkg-deb -x")
    tarballs = sorted((staging / "pkg" / "usr" / "src").glob("linux-source-*.tar.*"))
    if not tarballs:
        raise InfraError(f"{deb.name} holds no /usr/src/linux-source-*.tar.*", f"see {log}")
    run_logged(
        ["tar", "-xf", tarballs[0], "-C", staging],
        log=log,
        label=f"source: unpack {tarballs[0].name}",
    )
    shutil.rmtree(staging / "pkg")
    tops = [p for p in staging.iterdir() if p.is_dir()]
    if len(tops) != 1:
        raise InfraError(f"{tarballs[0].name} unpacked to {len(tops)} folders, expected 1")
    staging.rename(dest)
    tree = dest / tops[0].name
    (dest / UNPACKED_MARK).write_text(f"{tree}\n")
    return tree


def prepare(lab: LabConfig, name: str, spec: KernelSource) -> SourceTree:
    assert spec.deb is not None
    return from_deb(name, spec.deb)
