# shellcheck shell=bash
# Sourced (not run) by every CI job once the lab is checked out at $GMEMLAB_DIR and the
# kernel under review at $GMEMLAB_KERNEL_DIR: the Debian packages and the venv (make
# deps venv), LAB, LAB_CACHE and ccache's size bound (CCACHE_MAXSIZE) for the job's
# later commands (GitHub: for later steps, through $GITHUB_ENV), and the lab's own files
# kept out of the kernel tree's git status (a path kernel with untracked files is
# recorded as dirty).
: "${GMEMLAB_DIR:?set GMEMLAB_DIR to the lab checkout}"
: "${GMEMLAB_KERNEL_DIR:?set GMEMLAB_KERNEL_DIR to the kernel checkout}"
# Jobs that share a machine (a runner with concurrent > 1) would race on apt's lock.
flock "${TMPDIR:-/tmp}/gmemlab-deps.lock" make -C "$GMEMLAB_DIR" deps
make -C "$GMEMLAB_DIR" venv
export LAB="$GMEMLAB_DIR/.venv/bin/lab"
export LAB_CACHE="${LAB_CACHE:-$GMEMLAB_KERNEL_DIR/.lab-cache}"
# ccache's size bound: the lab's builds pass CCACHE_MAXSIZE from their environment
# (harness/kmake.py, default 10G), which would override a max_size in ccache.conf, so
# the bound is set there and not written into a cache that may be shared.
export CCACHE_MAXSIZE="${GMEMLAB_CCACHE_SIZE:-5G}"
if [ -d "$GMEMLAB_KERNEL_DIR/.git" ]; then
    gmemlab_exclude="$GMEMLAB_KERNEL_DIR/.git/info/exclude"
    mkdir -p "$(dirname "$gmemlab_exclude")"
    # /.gitlab-ci-local/: gitlab-ci-local's state, when the pipeline runs on a desk.
    for gmemlab_path in /.gmemlab/ /.lab-cache/ /build/ /results/ /retried/ /matrix-report/ \
        /checkout.json /gmemlab-child.yml /.gitlab-ci-local/; do
        grep -qxF "$gmemlab_path" "$gmemlab_exclude" 2>/dev/null || echo "$gmemlab_path" >>"$gmemlab_exclude"
    done
fi
if [ -n "${GITHUB_ENV:-}" ]; then
    echo "LAB=$LAB" >>"$GITHUB_ENV"
    echo "LAB_CACHE=$LAB_CACHE" >>"$GITHUB_ENV"
    echo "CCACHE_MAXSIZE=$CCACHE_MAXSIZE" >>"$GITHUB_ENV"
fi
