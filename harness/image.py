"""The image stage: a Debian root filesystem as a read-only qcow2 base, cached by recipe.

The recipe is a folder under images/ (a package list and overlay files) plus lab.yaml's
`image:` settings and the lab's keys. Their hash names the cache folder, so an
unchanged recipe is reused as is and any change builds a new image beside the old one.

mmdebstrap builds the tree and, from a customize hook inside its own namespace, runs
mkfs.ext4 -d on it: inside the namespace every file is owned by root, so the same path
works as root and unprivileged (unshare mode), with no loop mounts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness import aptsources, keys
from harness.cachelock import locked
from harness.config import LabConfig
from harness.errors import InfraError, UserError
from harness.paths import cache_dir
from harness.proc import require_tools, run_logged

# Bump when the build procedure below changes what ends up in the image.
BUILDER_VERSION = "1"
# mmdebstrap honours it (e.g. shadow dates), so equal recipes give equal trees.
SOURCE_DATE_EPOCH = "1767225600"  # 2026-01-01
BASE_NAME = "base.qcow2"
USER = "root"
# The base image holds the guest's private host key (and root's authorized_keys): anyone
# who can read it can impersonate the pinned guest, so it is the owner's alone, like the
# key files themselves. (Never written to: every boot writes to its own overlay.)
BASE_MODE = 0o600

# Run inside the finished tree ("$1") by mmdebstrap: fixed text, nothing from lab.yaml.
_FINISH_SCRIPT = r"""
set -eu
root="$1"
# Only the lab's host key: the package's generated keys would never be pinned.
find "$root/etc/ssh" -maxdepth 1 -name 'ssh_host_*' ! -name 'ssh_host_ed25519_key*' -delete
chmod 0600 "$root/etc/ssh/ssh_host_ed25519_key"
chmod 0700 "$root/root/.ssh"
chmod 0600 "$root/root/.ssh/authorized_keys"
chmod 0755 "$root/usr/local/sbin/gmemlab-init"
# Root has no password (locked); key login only, see sshd_config.d/gmemlab.conf.
chroot "$root" passwd --lock root >/dev/null
chroot "$root" systemctl enable systemd-networkd.service ssh.service >/dev/null 2>&1
# No first-boot work under systemd: a fixed machine-id, no network wait.
chroot "$root" systemctl mask systemd-networkd-wait-online.service >/dev/null 2>&1
rm -rf "$root/var/cache/apt/"* "$root/var/lib/apt/lists/"*
"""


@dataclass(frozen=True)
class Image:
    """A built guest image: never written to; every boot adds its own overlay."""

    base_qcow2: Path
    recipe_hash: str
    client_key: Path
    client_pubkey: Path
    # The pinned host key, as 'ssh-ed25519 AAAA...'; see keys.host_keys_for().
    host_pubkey: Path
    host_key_line: str
    user: str = USER
    # Seconds spent building it now; 0.0 when the cached image was reused.
    build_seconds: float = 0.0


def recipe_files(recipe: Path) -> list[Path]:
    if not recipe.is_dir():
        raise UserError(
            f"image recipe {recipe} does not exist",
            "set image.recipe in lab.yaml to a folder under images/",
        )
    return sorted(p for p in recipe.rglob("*") if p.is_file())


def packages(recipe: Path) -> list[str]:
    """The package list: one name a line, '#' comments."""
    path = recipe / "packages"
    if not path.is_file():
        raise UserError(f"{path}: missing package list", "add one package name a line")
    names = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            names.append(line)
    return names


def recipe_hash(lab: LabConfig, lab_keys: keys.LabKeys) -> str:
    """What the image depends on: recipe files, image settings, keys, build procedure."""
    recipe = lab.recipe_dir()
    digest = hashlib.sha256()
    digest.update(f"builder={BUILDER_VERSION}\n".encode())
    spec = lab.image.model_dump(mode="json")
    digest.update(json.dumps(spec, sort_keys=True).encode())
    digest.update(f"keys={lab_keys.fingerprint()}\n".encode())
    for path in recipe_files(recipe):
        rel = path.relative_to(recipe).as_posix()
        mode = "x" if os.access(path, os.X_OK) else "-"
        digest.update(f"{rel}\0{mode}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def _image_from(folder: Path, digest: str, lab_keys: keys.LabKeys, seconds: float) -> Image:
    return Image(
        base_qcow2=folder / BASE_NAME,
        recipe_hash=digest,
        client_key=lab_keys.client_key,
        client_pubkey=lab_keys.client_pubkey,
        host_pubkey=lab_keys.host_pubkey,
        host_key_line=lab_keys.host_key_line,
        build_seconds=seconds,
    )


def lab_keys() -> keys.LabKeys:
    return keys.ensure_keys(cache_dir("keys"))


def ensure_image(lab: LabConfig) -> Image:
    """The image for lab's recipe: reused when cached, else built (build or reuse)."""
    lk = lab_keys()
    digest = recipe_hash(lab, lk)
    images = cache_dir("images")
    final = images / digest
    with locked(images / f"{digest}.lock", f"image {digest}"):
        if (final / BASE_NAME).is_file() and (final / "image.json").is_file():
            # Images built before BASE_MODE were world-readable (0444): tighten them.
            owner_only(final / BASE_NAME)
            return _image_from(final, digest, lk, 0.0)
        seconds = _build(lab, lk, digest, final)
    return _image_from(final, digest, lk, seconds)


def owner_only(path: Path, mode: int = BASE_MODE) -> None:
    """Give a file that holds a private key `mode` if group or others can reach it."""
    if path.stat().st_mode & 0o077:
        path.chmod(mode)


def _stage_overlay(recipe: Path, lab_keys: keys.LabKeys, stage: Path) -> None:
    """The recipe's overlay plus the lab's keys, as one tree to copy into the image."""
    overlay = recipe / "overlay"
    if overlay.is_dir():
        shutil.copytree(overlay, stage, symlinks=True, dirs_exist_ok=True)
    ssh = stage / "etc" / "ssh"
    ssh.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(lab_keys.host_key, ssh / keys.HOST_KEY)
    # copyfile takes the umask's mode; the finish script sets 0600 in the image, and the
    # staged copy is owner-only too while it waits.
    (ssh / keys.HOST_KEY).chmod(0o600)
    shutil.copyfile(lab_keys.host_pubkey, ssh / f"{keys.HOST_KEY}.pub")
    root_ssh = stage / "root" / ".ssh"
    root_ssh.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(lab_keys.client_pubkey, root_ssh / "authorized_keys")


def mmdebstrap_argv(
    lab: LabConfig, stage: Path, raw: Path, pkgs: list[str], mode: str
) -> list[str]:
    """The mmdebstrap command; the hooks' only variable parts are our own quoted paths."""
    # While hooks run, /proc, /sys and /dev are mounted in the tree; a plain (non-recursive)
    # bind mount in a private mount namespace shows mkfs the tree without them.
    view = raw.parent / "view"
    mkfs = " ".join(
        [
            "mkdir -p",
            shlex.quote(str(view)),
            "&& unshare --mount --propagation private sh -ec",
            shlex.quote(
                " ".join(
                    [
                        'mount --bind "$1" "$2" &&',
                        "mkfs.ext4 -q -F -L gmemlab-root",
                        f"-U {_uuid(raw.parent.name)}",
                        '-d "$2"',
                        shlex.quote(str(raw)),
                        f"{lab.image.size_mib}M",
                    ]
                )
            ),
            'unshare "$1"',
            shlex.quote(str(view)),
        ]
    )
    return [
        "mmdebstrap",
        f"--mode={mode}",
        "--variant=minbase",
        "--include=" + ",".join(pkgs),
        f"--customize-hook=sync-in {shlex.quote(str(stage))} /",
        "--customize-hook=" + _FINISH_SCRIPT,
        "--customize-hook=" + mkfs,
        lab.image.suite,
        "/dev/null",
        # lab.yaml's mirror, else this machine's own (no archive host is named here).
        lab.image.mirror or aptsources.host_mirror(),
    ]


def _uuid(seed: str) -> str:
    """A file-system UUID derived from the recipe hash: the same recipe, the same UUID."""
    h = hashlib.sha256(seed.encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _build(lab: LabConfig, lab_keys: keys.LabKeys, digest: str, final: Path) -> float:
    require_tools("mmdebstrap", "mkfs.ext4", "qemu-img")
    recipe = lab.recipe_dir()
    pkgs = packages(recipe)
    start = time.monotonic()
    parent = final.parent
    work = Path(tempfile.mkdtemp(prefix=f".build-{digest}-", dir=parent))
    log = parent / f"{digest}.build.log"
    log.unlink(missing_ok=True)
    try:
        raw = work / digest / "root.ext4"
        raw.parent.mkdir()
        stage = work / "overlay"
        _stage_overlay(recipe, lab_keys, stage)
        mode = "root" if os.geteuid() == 0 else "unshare"
        env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}
        argv = mmdebstrap_argv(lab, stage, raw, pkgs, mode)
        run_logged(
            argv,
            log=log,
            label=f"image {lab.image.recipe} ({lab.image.suite})",
            env=env,
        )
        out = work / "out"
        out.mkdir()
        run_logged(
            ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, out / BASE_NAME],
            log=log,
            label="image qcow2",
        )
        raw.unlink()
        (out / BASE_NAME).chmod(BASE_MODE)
        seconds = time.monotonic() - start
        meta = {
            "recipe": lab.image.recipe,
            "recipe_hash": digest,
            "suite": lab.image.suite,
            "mirror": argv[-1],
            "size_mib": lab.image.size_mib,
            "packages": pkgs,
            "build_seconds": round(seconds, 1),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (out / "image.json").write_text(json.dumps(meta, indent=2) + "\n")
        shutil.copyfile(log, out / "build.log")
        if final.exists():  # a half-finished earlier attempt
            shutil.rmtree(final)
        out.rename(final)
    except OSError as exc:
        raise InfraError(f"building image {digest} failed: {exc}", f"see {log}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return seconds


def prune(keep: Image) -> list[Path]:
    """Delete every cached image but keep's (each is a few hundred MB); the removed."""
    images = keep.base_qcow2.parent.parent
    removed = []
    for entry in sorted(images.iterdir()):
        name = entry.name.split(".", 1)[0]
        if name == keep.recipe_hash or entry.name.startswith(".build-"):
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        removed.append(entry)
    return removed
