#!/usr/bin/env bash
# Installs the Debian packages the lab needs on a Debian 12 (bookworm) host.
# QEMU comes from bookworm-backports: 7.2's multi-threaded TCG oopsed guests
# (2 of 10 boots), 10.0 did not. Run as root or through sudo (make deps does).
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
backports_list=/etc/apt/sources.list.d/gmemlab-backports.list
if [ "$codename" = "bookworm" ] && ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    # On the mirror this machine already uses for bookworm: no archive host is named
    # here, and a machine behind a local mirror keeps using it.
    if ! mirror=$(bash "$(dirname "$0")/apt-mirror.sh" bookworm); then
        echo "deps: no apt source for bookworm found in /etc/apt/sources.list or" >&2
        echo "      /etc/apt/sources.list.d/ (*.list, *.sources); add the backports line" >&2
        echo "      yourself: echo 'deb <your Debian mirror> bookworm-backports main' |" >&2
        echo "      sudo tee $backports_list, then rerun make deps" >&2
        exit 1
    fi
    echo "deps: adding bookworm-backports (for QEMU 10.0) from $mirror as $backports_list"
    echo "deb $mirror bookworm-backports main" | $SUDO tee "$backports_list" >/dev/null
fi

BUILD_PKGS=(build-essential flex bison bc libelf-dev libssl-dev ccache cpio kmod rsync
            git xz-utils zstd python3-venv python3-dev libnuma-dev)
IMAGE_PKGS=(mmdebstrap e2fsprogs openssh-client apt)
QEMU_PKGS=(qemu-system-x86 qemu-utils)

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${BUILD_PKGS[@]}" "${IMAGE_PKGS[@]}"
if [ "$codename" = "bookworm" ]; then
    $SUDO apt-get install -y -q --no-install-recommends -t bookworm-backports "${QEMU_PKGS[@]}"
else
    $SUDO apt-get install -y -q --no-install-recommends "${QEMU_PKGS[@]}"
fi
qemu-system-x86_64 --version | head -1
