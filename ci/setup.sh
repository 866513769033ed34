# shellcheck shell=bash
# Sourced (not run) by every CI job once the lab is checked out at $GMEMLAB_DIR and the
# kernel under review at $GMEMLAB_KERNEL_DIR: the Debian packages and the venv (make
# deps venv), LAB and LAB_CACHE for the job's later commands (GitHub: for later steps,
# through $GITHUB_ENV), ccache's size bound, and the lab's own files kept out of the
# kernel tree's git status (a path kernel with untracked files is recorded as dirty).
: "${GMEMLAB_DIR:?set GMEMLAB_DIR to the lab checkout}"
: "${GMEMLAB_KERNEL_DIR:?set GMEMLAB_KERNEL_DIR to the kernel checkout}"
# Jobs that share a machine (a runner with concurrent > 1) would race on apt's lock.
flock "${TMPDIR:-/tmp}/gmemlab-deps.lock" make -C "$GMEMLAB_DIR" deps
make -C "$GMEMLAB_DIR" venv
export LAB="$GMEMLAB_DIR/.venv/bin/lab"
export LAB_CACHE="${LAB_CACHE:-$GMEMLAB_KERNEL_DIR/.lab-cache}"
mkdir -p "$LAB_CACHE/ccache"
# The bound is kept in the cache's own ccache.conf, so it travels with the CI cache.
CCACHE_DIR="$LAB_CACHE/ccache" ccache --max-size "${GMEMLAB_CCACHE_SIZE:-5G}" >/dev/null
if [ -d "$GMEMLAB_KERNEL_DIR/.git" ]; then
    gmemlab_exclude="$GMEMLAB_KERNEL_DIR/.git/info/exclude"
    mkdir -p "$(dirname "$gmemlab_exclude")"
    for gmemlab_path in /.gmemlab/ /.lab-cache/ /build/ /results/ /retried/ /matrix-report/ \
        /checkout.json /gmemlab-child.yml; do
        grep -qxF "$gmemlab_path" "$gmemlab_exclude" 2>/dev/null || echo "$gmemlab_path" >>"$gmemlab_exclude"
    done
fi
if [ -n "${GITHUB_ENV:-}" ]; then
    echo "LAB=$LAB" >>"$GITHUB_ENV"
    echo "LAB_CACHE=$LAB_CACHE" >>"$GITHUB_ENV"
fi
