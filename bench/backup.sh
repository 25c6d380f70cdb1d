#!/usr/bin/env bash
# Backup, verify, restore and drill: time and size for a database of SUBJECTS subjects and
# MESSAGES messages (issue 16). Herald in release mode; the database is grown by
# bench/backup_fixture.py from one subject and one message created through the API; the
# backup is taken while `herald serve` runs.
#   bench/backup.sh sqlite
#   bench/backup.sh postgres postgres://postgres@127.0.0.1:5432/postgres
# Environment: SUBJECTS (default 100000), MESSAGES (default 1000000). Needs age-keygen.
set -euo pipefail
cd "$(dirname "$0")/.."
backend="${1:-sqlite}"
subjects="${SUBJECTS:-100000}"
messages="${MESSAGES:-1000000}"
port=18082
root="$PWD"

cargo build --release --bin herald -q
herald="$root/target/release/herald"
work="$(mktemp -d)"
dbs=()
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  for db in "${dbs[@]}"; do psql "$server" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true; done
  rm -rf "$work"
}
trap cleanup EXIT

age-keygen -o "$work/identity.txt" 2> "$work/recipient.txt"
recipient="$(grep -o 'age1[0-9a-z]*' "$work/recipient.txt")"
cat > "$work/herald.toml" <<TOML
[backup]
recipients = ["$recipient"]
every = "0s"
TOML
export HERALD_ROLES__WORKER=false HERALD_LISTEN="127.0.0.1:$port" HERALD_LOG__LEVEL=warn HERALD_LOG__FORMAT=json
if [ "$backend" = postgres ]; then
  server="${2:?postgres needs a server URL}"
  dbs=("herald_backup_$$" "herald_restore_$$")
  psql "$server" -qc "CREATE DATABASE ${dbs[0]}"
  psql "$server" -qc "CREATE DATABASE ${dbs[1]}"
  export HERALD_DATABASE_URL="${server%/*}/${dbs[0]}"
fi
serve() {
  (cd "$work" && exec "$herald" serve >> "$work/stdout" 2>> "$work/stderr") &
  pid=$!
  for _ in $(seq 1 300); do curl -sf "localhost:$port/healthz" >/dev/null && break; sleep 0.1; done
}
stop() { kill "$pid"; wait "$pid" || true; pid=""; }

serve
key="$(grep -o 'hk_[0-9a-v]*' "$work/stdout")"
H=(-H "Authorization: Bearer $key" -H 'Content-Type: application/json')
sub="$(curl -sf "${H[@]}" "localhost:$port/v1/subjects" -d '{"phone":"+4915112345678"}' | grep -o '"id":"sub_[0-9a-v]*"' | cut -d'"' -f4)"
curl -sf "${H[@]}" -X PUT "localhost:$port/v1/subjects/$sub/consents/demo" \
  -d '{"evidence":{"method":"web_form","captured_at":"2026-11-29T10:00:00Z","source":"https://shop.example/signup"}}' >/dev/null
curl -sf "${H[@]}" "localhost:$port/v1/messages" \
  -d '{"to":"+4915112345678","purpose":"demo","template":{"name":"demo_update","language":"en","parameters":["Your order has shipped"]}}' >/dev/null
stop
if [ "$backend" = postgres ]; then
  python3 bench/backup_fixture.py postgres "$HERALD_DATABASE_URL" "$subjects" "$messages"
else
  python3 bench/backup_fixture.py sqlite "$work/herald-data/herald.db" "$subjects" "$messages"
fi
echo "backend=$backend subjects=$subjects messages=$messages cores=$(nproc) commit=$(git rev-parse --short HEAD 2>/dev/null || echo none)"
if [ "$backend" = sqlite ]; then
  echo "database: $(du -sh "$work/herald-data/herald.db" | cut -f1)"
else
  echo "database: $(psql "$HERALD_DATABASE_URL" -qAtc 'SELECT pg_size_pretty(pg_database_size(current_database()))')"
fi
measure() { # label, then the command; prints wall time, CPU and peak RSS
  local label="$1"; shift
  /usr/bin/time -f "$label: %e s wall, %U s user + %S s sys, %M KB peak RSS" "$@"
}
serve
measure "backup create (serving)" bash -c "cd '$work' && '$herald' backup create --json > '$work/created.json'"
stop
manifest="$work/$(grep -o '"manifest": "[^"]*"' "$work/created.json" | cut -d'"' -f4)"
payload="${manifest%.manifest.json}.jsonl.age"
echo "backup size: $(du -h "$payload" | cut -f1) ($(stat -c %s "$payload") bytes)"
measure "backup verify" bash -c "cd '$work' && '$herald' backup verify '$manifest' --identity '$work/identity.txt' --json > /dev/null"
mkdir "$work/restore"
cp "$work/herald.toml" "$work/restore/"
restore_env=()
if [ "$backend" = postgres ]; then restore_env=(HERALD_DATABASE_URL="${server%/*}/${dbs[1]}"); fi
measure "backup restore" env "${restore_env[@]}" bash -c "cd '$work/restore' && '$herald' backup restore '$manifest' --identity '$work/identity.txt' --data-dir herald-data --json > /dev/null"
measure "backup drill" bash -c "cd '$work' && '$herald' backup drill '$manifest' --identity '$work/identity.txt' --json > '$work/drill.json'"
grep -o '"rto_ms": [0-9]*' "$work/drill.json"
grep -c '"level":"ERROR"' "$work/stderr" | sed 's/^/errors in the log: /'
