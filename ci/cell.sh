#!/usr/bin/env bash
# A CI cell job: the build handed over by its build job (build/<build key>/), `lab run`
# into results/<cell>/ (real files: the `latest` link is removed), and KCIDB JSON beside
# the run. Exit: lab run's code (0 pass, 1 test failure or crash, 2 infrastructure,
# 3 bad input); the pipeline retries 2 once.
set -uo pipefail
: "${LAB:?}" "${GMEMLAB_CELL:?}" "${GMEMLAB_BUILD_KEY:?}" "${GMEMLAB_SUITES:?}"
manifest=$("$LAB" ci unpack-build "build/$GMEMLAB_BUILD_KEY") || exit $?
results="results/$GMEMLAB_CELL"
code=0
# GMEMLAB_TARGET: qemu, or a host from lab.yaml's hosts: (the runner must reach it
# through its own SSH config).
"$LAB" run --manifest "$manifest" --suites "$GMEMLAB_SUITES" --target "${GMEMLAB_TARGET:-qemu}" \
    --results "$results" || code=$?
rm -f "$results/latest"
for run in "$results"/*/; do
    run=${run%/}
    [ -f "$run/summary.json" ] || continue
    args=(export kcidb "$run" --manifest "$manifest" -o "$run/kcidb.json")
    if [ -f "${GMEMLAB_CHECKOUT_INFO:-checkout.json}" ]; then
        args+=(--checkout-info "${GMEMLAB_CHECKOUT_INFO:-checkout.json}")
    fi
    if [ -n "${GMEMLAB_ARTIFACT_URL:-}" ]; then
        args+=(--artifact-root "$GMEMLAB_ARTIFACT_URL/$run")
    fi
    "$LAB" "${args[@]}" || echo "cell: no KCIDB JSON (the run's verdict stands)" >&2
    if [ -n "${GITHUB_STEP_SUMMARY:-}" ] && [ -f "$run/report.md" ]; then
        cat "$run/report.md" >>"$GITHUB_STEP_SUMMARY"
    fi
done
exit "$code"
