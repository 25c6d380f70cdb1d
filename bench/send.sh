#!/usr/bin/env bash
# The send path end to end (issue 4): Herald in release mode against a local sink that answers
# like the WhatsApp Cloud API (crates/herald/examples/wa_sink.rs), POST /v1/messages driven at a
# fixed concurrency by crates/herald/examples/loadgen.rs. Prints accepted messages/s with p50/p99
# latency, end-to-end delivered messages/s (as the sink saw them) and Herald's peak RSS.
#   bench/send.sh sqlite
#   bench/send.sh postgres postgres://postgres@127.0.0.1:5432/postgres
# Environment: CONNECTIONS (default 64), SECONDS_OF_LOAD (default 20), ACCEPT_ONLY=1 (the node
# serves the API with its delivery worker switched off: the accept path alone), DRAIN=1 (accept
# with the worker off, then restart Herald with it on and time the backlog's delivery: the
# delivery machinery alone), BINARY=PATH (run that Herald binary instead of this tree's:
# two builds compared in one sitting, alternating, on a machine whose speed drifts),
# AUTH=oauth (send with an OAuth access token instead of the API key), AUTH=client with
# SCENARIO=token (token issuance: POST /oauth/token per request instead of sends),
# LOADGEN_CLIENT=reqwest (load through reqwest instead of the load generator's lean client,
# which costs about a third of reqwest's CPU per request: see BENCHMARKS.md).
# Durability is not relaxed: SQLite synchronous=FULL, PostgreSQL synchronous_commit as configured.
set -euo pipefail
cd "$(dirname "$0")/.."
backend="${1:-sqlite}"
connections="${CONNECTIONS:-64}"
seconds="${SECONDS_OF_LOAD:-20}"
port=18080
sink_port=18090

cargo build --release --bin herald --example loadgen --example wa_sink -q
herald="$(realpath "${BINARY:-target/release/herald}")"
source bench/common.sh
bench_limits_env "$herald"
work="$(mktemp -d)"
db=""
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  [ -n "${sink:-}" ] && kill "$sink" 2>/dev/null && wait "$sink" 2>/dev/null || true
  if [ -n "$db" ]; then psql "$server" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

target/release/examples/wa_sink "127.0.0.1:$sink_port" > "$work/sink.log" &
sink=$!

cat > "$work/herald.toml" <<TOML
[whatsapp]
base_url = "http://127.0.0.1:$sink_port"
api_version = "v21.0"
phone_number_id = "1062345678901234"
access_token = "bench-token"
app_secret = "bench-app-secret"
verify_token = "bench-verify-token"
# The sink has no throughput limit; pacing would measure the pacer, not Herald.
messages_per_second = 1000000

[delivery]
recipient_burst = 1000000
# The sink answers in well under a millisecond: more calls in flight and larger claims keep
# the worker from idling between them (against Meta, 32 in flight already exceed 80/s).
concurrency = 128
claim_batch = 256

[purposes.demo]
basis = "contract"

[[templates]]
name = "demo_update"
language = "en"
parameters = 1
category = "utility"
TOML

if [ "${ACCEPT_ONLY:-0}" = 1 ] || [ "${DRAIN:-0}" = 1 ]; then export HERALD_ROLES__WORKER=false; fi
export HERALD_LISTEN="127.0.0.1:$port" HERALD_LOG__LEVEL=warn HERALD_LOG__FORMAT=json
if [ "$backend" = postgres ]; then
  server="${2:?postgres needs a server URL}"
  db="herald_bench_$$"
  psql "$server" -qc "CREATE DATABASE $db"
  export HERALD_DATABASE_URL="${server%/*}/$db"
fi
(cd "$work" && exec "$herald" serve > "$work/stdout" 2> "$work/stderr") &
pid=$!
for _ in $(seq 1 100); do curl -sf "localhost:$port/healthz" >/dev/null && break; sleep 0.1; done
key="$(grep -o 'hk_[0-9a-v]*' "$work/stdout")"
key="$(bench_credential "http://127.0.0.1:$port" "$key")"

echo "backend=$backend cores=$(nproc) connections=$connections seconds=$seconds commit=$(git rev-parse --short HEAD 2>/dev/null || echo none) auth=${AUTH:-key}"
result="$(target/release/examples/loadgen "http://127.0.0.1:$port" "$key" "${SCENARIO:-send}" "$connections" "$seconds")"
echo "$result"
total="$(sed -n 's/.*total=\([0-9]*\).*/\1/p' <<<"$result")"

# Herald's own CPU time (user + system, all threads) per accepted message: steadier than the
# rates on a shared machine, so it is the figure to compare builds by.
cpu_per_message() {
  awk -v hz="$(getconf CLK_TCK)" -v n="${1:-$total}" -v what="${2:-accepted}" '{
    printf "herald CPU %.0f µs per %s message (%.1f s user+system)\n", ($14 + $15) / hz * 1e6 / n, what, ($14 + $15) / hz
  }' "/proc/$pid/stat"
}

if [ "${ACCEPT_ONLY:-0}" = 1 ]; then
  cpu_per_message
  awk '/VmHWM/ {printf "peak RSS   %.1f MiB\n", $2 / 1024}' "/proc/$pid/status"
  exit 0
fi

if [ "${DRAIN:-0}" = 1 ]; then
  cpu_per_message
  kill -TERM "$pid" && wait "$pid" || true
  export HERALD_ROLES__WORKER=true
  (cd "$work" && exec "$herald" serve >> "$work/stdout" 2>> "$work/stderr") &
  pid=$!
fi

# End to end: wait until the sink has every accepted message.
for _ in $(seq 1 600); do
  stats="$(curl -sf "localhost:$sink_port/stats")"
  accepted="$(sed -n 's/.*"accepted":\([0-9]*\).*/\1/p' <<<"$stats")"
  [ "$accepted" -ge "$total" ] && break
  sleep 0.2
done
first="$(sed -n 's/.*"first_ms":\([0-9]*\).*/\1/p' <<<"$stats")"
last="$(sed -n 's/.*"last_ms":\([0-9]*\).*/\1/p' <<<"$stats")"
# In DRAIN mode the node that drained did nothing else: its CPU is the delivery machinery's.
if [ "${DRAIN:-0}" = 1 ]; then cpu_per_message "$accepted" delivered; else cpu_per_message; fi
rss_kib="$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")"
awk -v n="$accepted" -v total="$total" -v first="$first" -v last="$last" -v rss="$rss_kib" 'BEGIN {
  secs = (last - first) / 1000; if (secs <= 0) secs = 0.001;
  printf "delivered  %d of %d accepted reached the sink in %.2f s: %.0f delivered messages/s end to end\n", n, total, secs, n / secs;
  printf "peak RSS   %.1f MiB\n", rss / 1024;
}'
grep -c '"level":"ERROR"' "$work/stderr" | sed 's/^/errors in the log: /'
