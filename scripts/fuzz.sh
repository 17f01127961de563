#!/usr/bin/env bash
# Fuzzing Berth's parsers of client input: the cargo-fuzz targets in fuzz/ (libFuzzer),
# built on the stable toolchain (`--sanitizer none`: no -Z flags needed; debug assertions
# and overflow checks stay on). Installs cargo-fuzz if missing.
#
#   bash scripts/fuzz.sh --ci   [TARGET...]  each target for BERTH_FUZZ_SECONDS (default 8) s
#   bash scripts/fuzz.sh --long [TARGET...]  each target to BERTH_FUZZ_RUNS (default 10000000)
#                                            executions, one after the other, one job
#
# Both fail on the first crash (a panic, a failed property, a timeout or an out-of-memory)
# and print a table: target, executions, seconds, crashes, corpus entries learned, edges
# covered (libFuzzer's `cov`). A crash leaves
# its input in fuzz/artifacts/<target>/; replay it with
#   cd fuzz && cargo fuzz run --sanitizer none <target> artifacts/<target>/<file>
# Seeds are read from fuzz/corpus/<target>/ (committed, never written); what the fuzzer
# learns goes to fuzz/target/corpus/<target>/, kept between runs on this machine.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

mode=${1:-}
case "$mode" in
    --ci) limit=(-max_total_time="${BERTH_FUZZ_SECONDS:-8}") ;;
    --long) limit=(-runs="${BERTH_FUZZ_RUNS:-10000000}") ;;
    *) echo "usage: $0 --ci|--long [TARGET...]" >&2; exit 2 ;;
esac
shift

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --version 0.13.2 --locked

build=(--sanitizer none)
targets=("$@")
((${#targets[@]})) || mapfile -t targets < <(cargo fuzz list)
if ((${#targets[@]} == 1)); then
    cargo fuzz build "${build[@]}" "${targets[0]}"
else
    cargo fuzz build "${build[@]}"
fi

mkdir -p target/fuzz-logs
failed=()
table=$(printf '%-14s %12s %9s %8s %7s %9s' target executions seconds crashes corpus coverage)
for t in "${targets[@]}"; do
    work=target/corpus/$t
    mkdir -p "$work" "artifacts/$t"
    dict=()
    [[ -f dict/$t.dict ]] && dict=(-dict="dict/$t.dict")
    log=target/fuzz-logs/$t.log
    before=$(find "artifacts/$t" -type f | wc -l)
    start=$(date +%s)
    status=0
    cargo fuzz run "${build[@]}" "$t" "$work" "corpus/$t" -- \
        "${limit[@]}" "${dict[@]}" -timeout=10 -print_final_stats=1 >"$log" 2>&1 || status=$?
    seconds=$(($(date +%s) - start))
    crashes=$(($(find "artifacts/$t" -type f | wc -l) - before))
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    corpus=$(find "$work" -type f | wc -l)
    coverage=$(sed -n 's/^#[0-9]*[[:space:]]*DONE[[:space:]]*cov: \([0-9]*\).*/\1/p' "$log" | tail -1)
    table+=$'\n'$(printf '%-14s %12s %9s %8s %7s %9s' "$t" "${runs:-?}" "$seconds" "$crashes" "$corpus" "${coverage:-?}")
    if ((status != 0 || crashes != 0)); then
        failed+=("$t")
        echo "fuzz target $t failed (exit $status); the end of $log:" >&2
        tail -n 40 "$log" >&2
    fi
done
echo "$table"
if ((${#failed[@]})); then
    echo "crashed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
