#!/usr/bin/env bash
# Herald HTTP benchmarks: builds the release binary and the load generator, starts Herald on
# a fresh data directory, and runs each scenario. Usage:
#   bench/run.sh sqlite                                   # embedded SQLite
#   bench/run.sh postgres postgres://postgres@127.0.0.1:5432/postgres   # a fresh database there
# Environment: CONNECTIONS (default 32), SECONDS_PER_SCENARIO (default 10).
set -euo pipefail
cd "$(dirname "$0")/.."
backend="${1:-sqlite}"
connections="${CONNECTIONS:-32}"
seconds="${SECONDS_PER_SCENARIO:-10}"

cargo build --release --bin herald --example loadgen -q
source bench/common.sh
bench_limits_env target/release/herald
work="$(mktemp -d)"
db=""
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  if [ -n "$db" ]; then psql "$server" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

export HERALD_LISTEN=127.0.0.1:18080 HERALD_LOG__LEVEL=warn HERALD_LOG__FORMAT=json
if [ "$backend" = postgres ]; then
  server="${2:?postgres needs a server URL}"
  db="herald_bench_$$"
  psql "$server" -qc "CREATE DATABASE $db"
  export HERALD_DATABASE_URL="${server%/*}/$db"
fi
(cd "$work" && exec "$OLDPWD/target/release/herald" serve > "$work/stdout" 2> "$work/stderr") &
pid=$!
for _ in $(seq 1 100); do curl -sf localhost:18080/healthz >/dev/null && break; sleep 0.1; done
key="$(grep -o 'hk_[0-9a-v]*' "$work/stdout")"

echo "backend=$backend cores=$(nproc) connections=$connections seconds=$seconds commit=$(git rev-parse --short HEAD 2>/dev/null || echo none)"
for scenario in health get lookup register; do
  target/release/examples/loadgen "http://127.0.0.1:18080" "$key" "$scenario" "$connections" "$seconds"
done
