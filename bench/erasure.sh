#!/usr/bin/env bash
# Erasure cost by the number of the subject's messages (issue 6): Herald in release mode with
# its delivery worker off (every message stays queued, so the erasure has to cancel each one —
# the costliest case), a subject filled with N messages through POST /v1/messages, then
# DELETE /v1/subjects/{id} timed by crates/herald/examples/erasure_bench.rs.
#   bench/erasure.sh sqlite
#   bench/erasure.sh postgres postgres://postgres@127.0.0.1:5432/postgres
# Environment: SIZES (default 1,1000,10000).
set -euo pipefail
cd "$(dirname "$0")/.."
backend="${1:-sqlite}"
sizes="${SIZES:-1,1000,10000}"
port=18081

cargo build --release --bin herald --example erasure_bench -q
work="$(mktemp -d)"
db=""
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  if [ -n "$db" ]; then psql "$server" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

cat > "$work/herald.toml" <<TOML
[purposes.demo]
basis = "contract"

[[templates]]
name = "demo_update"
language = "en"
parameters = 1
category = "utility"
TOML

export HERALD_ROLES__WORKER=false HERALD_LISTEN="127.0.0.1:$port" HERALD_LOG__LEVEL=warn HERALD_LOG__FORMAT=json
if [ "$backend" = postgres ]; then
  server="${2:?postgres needs a server URL}"
  db="herald_erasure_$$"
  psql "$server" -qc "CREATE DATABASE $db"
  export HERALD_DATABASE_URL="${server%/*}/$db"
fi
(cd "$work" && exec "$OLDPWD/target/release/herald" serve > "$work/stdout" 2> "$work/stderr") &
pid=$!
for _ in $(seq 1 100); do curl -sf "localhost:$port/healthz" >/dev/null && break; sleep 0.1; done
key="$(grep -o 'hk_[0-9a-v]*' "$work/stdout")"
echo "backend=$backend cores=$(nproc) commit=$(git rev-parse --short HEAD 2>/dev/null || echo none)"
target/release/examples/erasure_bench "http://127.0.0.1:$port" "$key" "$sizes"
grep -c '"level":"ERROR"' "$work/stderr" | sed 's/^/errors in the log: /'
