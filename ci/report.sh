#!/usr/bin/env bash
# The CI's final job: every cell's run folder under results/ (the cell jobs' artifacts)
# merged into matrix-report/ (matrix.json, matrix.md, junit.xml) with one verdict. The
# expected cells come from the same `lab matrix --list` the fan-out used, so a cell
# whose job never ran is reported missing, not forgotten.
# Exit: the worst cell's code (3, then 2, then 1).
set -uo pipefail
: "${LAB:?}" "${GMEMLAB_MATRIX:?}"
mkdir -p matrix-report results
cells=matrix-report/cells.json
if [ -n "${GMEMLAB_KERNEL:-}" ]; then
    "$LAB" matrix "$GMEMLAB_MATRIX" --list --format json --kernel "$GMEMLAB_KERNEL" \
        --kernel-label "${GMEMLAB_KERNEL_LABEL:-checkout}" >"$cells" || exit $?
else
    "$LAB" matrix "$GMEMLAB_MATRIX" --list --format json >"$cells" || exit $?
fi
if [ -f checkout.json ]; then cp checkout.json matrix-report/; fi
code=0
"$LAB" matrix-report results --expect "$cells" --name "$GMEMLAB_MATRIX" --out matrix-report || code=$?
if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
    cat matrix-report/matrix.md >>"$GITHUB_STEP_SUMMARY"
    if [ -f checkout.json ]; then
        { echo; echo "kernel checkout and merge base:"; echo; sed 's/^/    /' checkout.json; } \
            >>"$GITHUB_STEP_SUMMARY"
    fi
fi
exit "$code"
