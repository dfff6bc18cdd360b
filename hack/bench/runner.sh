#!/usr/bin/env bash
# runner.sh runs the benchmark of issue 3: on the Go hello-world, against one rootless buildkitd
# and its cache, `kiln runner` (build + measure + push) versus `buildctl build --output
# type=image,push=true`, cold / warm / after a source change, and prints the table of medians.
#
#   hack/bench/runner.sh                 # 5 runs per scenario and tool
#   KILN_BENCH_RUNS=9 hack/bench/runner.sh
#   KILN_BENCH_OUT=/tmp/bench.txt hack/bench/runner.sh   # keep the table
#
# Needs root (the test harness runs buildkitd rootless as an unprivileged user); it installs the
# test dependencies first (hack/install-test-deps.sh). Everything listens on 127.0.0.1.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO_ROOT"

deps_log="$(mktemp)"
if ! bash hack/install-test-deps.sh >"$deps_log" 2>&1; then
	cat "$deps_log" >&2
	echo "hack/install-test-deps.sh failed" >&2
	rm -f "$deps_log"
	exit 1
fi
rm -f "$deps_log"

table="${KILN_BENCH_OUT:-}"
tmp_table=""
if [[ -z "$table" ]]; then
	tmp_table="$(mktemp)"
	table="$tmp_table"
fi
log="$(mktemp)"
cleanup() { rm -f "$log" ${tmp_table:+"$tmp_table"}; }
trap cleanup EXIT

: >"$table" # the tests append their tables
export KILN_BENCH_RUNS="${KILN_BENCH_RUNS:-5}"
echo "benchmark: $KILN_BENCH_RUNS runs per scenario and tool (log: go test -v below)"
status=0
KILN_BENCH_OUT="$table" go test -tags bench -count=1 -v -timeout 30m -run '^(TestBenchRunnerVsBuildctl|TestBenchSupplyChain)$' ./internal/runner/ 2>&1 | tee "$log" || status=$?
if [[ $status -ne 0 ]]; then
	echo "the benchmark failed (exit $status)" >&2
	exit "$status"
fi
if [[ ! -s "$table" ]]; then
	echo "the benchmark wrote no table (was it skipped?)" >&2
	exit 1
fi
echo
echo "=================================================================================="
cat "$table"
grep -o 'warm-rebuild ratio runner/buildctl .*' "$log" || true
