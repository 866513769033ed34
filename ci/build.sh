#!/usr/bin/env bash
# A CI build job: `lab build` of one kernel and config, then the build packed into
# build/<build key>/ (the job's artifact) for every cell that shares it.
# Exit: lab build's code (1 the tree does not build, 2 infrastructure, 3 bad input).
set -euo pipefail
: "${LAB:?}" "${GMEMLAB_KERNEL:?}" "${GMEMLAB_CONFIG:?}" "${GMEMLAB_BUILD_KEY:?}"
log=$(mktemp)
"$LAB" build --kernel "$GMEMLAB_KERNEL" --config "$GMEMLAB_CONFIG" | tee "$log"
"$LAB" ci pack-build "$(tail -n 1 "$log")" "build/$GMEMLAB_BUILD_KEY"
