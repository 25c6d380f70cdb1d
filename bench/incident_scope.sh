#!/usr/bin/env bash
# How fast an incident scope reads the audit trail (issue 16): `herald serve` (release, worker
# off) takes sends for SECONDS_OF_LOAD seconds, then an incident is scoped to the route
# /v1/messages over that window; prints the entries scanned, the subjects found and the time
# the scope request took.
#   bench/incident_scope.sh                       (SQLite)
#   bench/incident_scope.sh postgres postgres://postgres@127.0.0.1:5432/postgres
# Environment: SECONDS_OF_LOAD (default 20), RECIPIENTS (default 1000).
set -euo pipefail
cd "$(dirname "$0")/.."
backend="${1:-sqlite}"
seconds="${SECONDS_OF_LOAD:-20}"
port=18093
cargo build --release --bin herald --example loadgen -q
source bench/common.sh
herald="$PWD/target/release/herald"
bench_limits_env "$herald"
work="$(mktemp -d)"
db=""
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  [ -n "$db" ] && psql "$server" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true
  rm -rf "$work"
}
trap cleanup EXIT
export HERALD_ROLES__WORKER=false HERALD_LISTEN="127.0.0.1:$port" HERALD_LOG__LEVEL=warn HERALD_LOG__FORMAT=json
if [ "$backend" = postgres ]; then
  server="${2:?postgres needs a server URL}"
  db="herald_scope_$$"
  psql "$server" -qc "CREATE DATABASE $db"
  export HERALD_DATABASE_URL="${server%/*}/$db"
fi
(cd "$work" && exec "$herald" serve > "$work/stdout" 2> "$work/stderr") &
pid=$!
for _ in $(seq 1 300); do curl -sf "localhost:$port/healthz" >/dev/null && break; sleep 0.1; done
key="$(grep -o 'hk_[0-9a-v]*' "$work/stdout")"
from="$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)"
export RECIPIENTS="${RECIPIENTS:-1000}"
target/release/examples/loadgen "http://127.0.0.1:$port" "$key" send 32 "$seconds"
sleep 2
H=(-H "Authorization: Bearer $key" -H 'Content-Type: application/json')
now="$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)"
incident="$(curl -sf "${H[@]}" "localhost:$port/v1/incidents" -d "{\"summary\":\"bench\",\"detected_at\":\"$now\",\"became_aware_at\":\"$now\",\"kinds\":[\"confidentiality\"],\"source\":\"bench\"}" | grep -o '"id":"inc_[0-9a-v]*"' | cut -d'"' -f4)"
start="$(date +%s.%N)"
answer="$(curl -sf "${H[@]}" "localhost:$port/v1/incidents/$incident/scope" -d "{\"route\":\"/v1/messages\",\"from\":\"$from\"}")"
end="$(date +%s.%N)"
entries="$(grep -o '"entries_scanned":[0-9]*' <<<"$answer" | cut -d: -f2)"
subjects="$(grep -o '"subjects":[0-9]*' <<<"$answer" | head -1 | cut -d: -f2)"
awk -v e="$entries" -v s="$subjects" -v a="$start" -v b="$end" -v backend="$backend" 'BEGIN {
  printf "%s: scope over %d entries found %d subjects in %.2f s (%.0f entries/s)\n", backend, e, s, b - a, e / (b - a) }'
