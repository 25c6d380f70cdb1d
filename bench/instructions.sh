#!/usr/bin/env bash
# Instructions per accepted message on the send path, counted by valgrind's callgrind: unlike
# rates and latencies on a shared 2-core machine, the count repeats closely from run to run,
# so it is the figure to compare builds by (bench/send.sh gives the rates).
#   bench/instructions.sh            (SQLite; the node's delivery worker off)
# Environment: SECONDS_OF_LOAD (default 30); KEEP=FILE keeps the callgrind profile there (for
# callgrind_annotate --inclusive=yes FILE); BINARY=PATH runs that Herald binary (an older
# build, compared alternately); AUTH=oauth sends with an OAuth access token (a JWT) instead of
# the API key. Herald runs ~50x slower under callgrind; the load
# generator (8 connections, 50 recipients) runs natively. Instrumentation covers the send phase
# (which re-finds the 50 recipients first: under 1 % of its requests), not start-up.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is not installed"; exit 1; }
seconds="${SECONDS_OF_LOAD:-30}"
port=18777

cargo build --release --bin herald --example loadgen -q
source bench/common.sh
herald="$(realpath "${BINARY:-target/release/herald}")"
bench_limits_env "$herald"
work="$(mktemp -d)"
cleanup() {
  pkill -TERM -f "callgrind-out-file=$work" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

export HERALD_LISTEN="127.0.0.1:$port" HERALD_ROLES__WORKER=false HERALD_LOG__LEVEL=warn HERALD_LOG__FORMAT=json
(cd "$work" && exec valgrind --tool=callgrind --instr-atstart=no \
  --callgrind-out-file="$work/callgrind.out" "$herald" serve \
  > "$work/stdout" 2> "$work/stderr") &
pid=$!
for _ in $(seq 1 300); do curl -sf "localhost:$port/healthz" >/dev/null && break; sleep 0.2; done
key="$(grep -o 'hk_[0-9a-v]*' "$work/stdout")"
key="$(bench_credential "http://127.0.0.1:$port" "$key")"
export RECIPIENTS=50
# Registers the recipients (not counted).
target/release/examples/loadgen "http://127.0.0.1:$port" "$key" send 8 1 > /dev/null
callgrind_control -i on "$pid" > /dev/null
result="$(target/release/examples/loadgen "http://127.0.0.1:$port" "$key" send 8 "$seconds")"
callgrind_control -i off "$pid" > /dev/null
kill -TERM "$pid"
wait "$pid" 2>/dev/null || true
echo "commit=$(git rev-parse --short HEAD 2>/dev/null || echo none) binary=${BINARY:-this tree} auth=${AUTH:-key}"
echo "$result"
total="$(sed -n 's/.*total=\([0-9]*\).*/\1/p' <<<"$result")"
instructions="$(callgrind_annotate "$work/callgrind.out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')"
awk -v i="$instructions" -v n="$total" 'BEGIN { printf "instructions per accepted message: %.0f (%d sends)\n", i / n, n }'
if [ -n "${KEEP:-}" ]; then cp "$work/callgrind.out" "$KEEP"; fi
