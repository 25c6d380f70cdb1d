#!/usr/bin/env bash
# Audit-trail benchmarks (crates/herald/examples/audit_bench.rs), each on a fresh database:
#   seal     512 producers append for 10 s while the background sealer runs: append and seal
#            rates, and the sealing lag (age of the oldest unsealed entry, sampled every 100 ms)
#   backlog  500,000 entries appended with no sealer, then sealed: the sealer's own throughput
#   verify   1,000,000 entries, then a full verification (database reads included) and the
#            chain check alone, in memory, on one core
# Usage:
#   bench/audit.sh sqlite
#   bench/audit.sh postgres postgres://postgres@127.0.0.1:5432/postgres
set -euo pipefail
cd "$(dirname "$0")/.."
backend="${1:-sqlite}"
server="${2:-}"
cargo build --release --example audit_bench -q
bin=target/release/examples/audit_bench
echo "backend=$backend cores=$(nproc) commit=$(git rev-parse --short HEAD 2>/dev/null || echo none)"

run() {
  if [ "$backend" = postgres ]; then
    local db="herald_bench_audit_$$"
    psql "$server" -qc "CREATE DATABASE $db"
    "$bin" "$1" "${server%/*}/$db" "${@:2}" || true
    psql "$server" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"
  else
    "$bin" "$1" - "${@:2}"
  fi
}

run seal 512 10
run backlog 500000
run verify 1000000
