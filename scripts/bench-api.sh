#!/usr/bin/env bash
# Load benchmark of the API (not a test): a release build of zipkit-api against PostgreSQL and
# RabbitMQ on this machine, driven by wrk at fixed concurrency. Prints requests/s and latency
# percentiles for POST /v1/zips (10 entries; stored, published with confirms) and for
# GET /v1/zips/{uuid}. Figures are recorded in docs/PERFORMANCE.md.
#   BENCH_CONNECTIONS (default 32), BENCH_SECONDS (default 20), BENCH_PORT (default 18080),
#   BENCH_API_BIN (a zipkit-api built elsewhere, another commit's say, measured instead of this
#   checkout's release build: run both one after the other to compare)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOG_TAG=bench
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
cd "$ROOT"

CONNECTIONS=${BENCH_CONNECTIONS:-32}
SECONDS_EACH=${BENCH_SECONDS:-20}
PORT=${BENCH_PORT:-18080}

scripts/services.sh up >/dev/null
load_services_env "$ROOT"
apt_install wrk python3
if [ -n "${BENCH_API_BIN:-}" ]; then
  bin=$BENCH_API_BIN
else
  log "building zipkit-api (release)"
  cargo build --release --locked --quiet -p zipkit-api
  bin=${CARGO_TARGET_DIR:-$ROOT/target}/release/zipkit-api
fi

admin=$ZIPKIT_TEST_POSTGRES_URL
psql -q "$admin" -c "DROP DATABASE IF EXISTS zipkit_bench WITH (FORCE)" -c "CREATE DATABASE zipkit_bench" >/dev/null
export ZIPKIT_ENV=development
export ZIPKIT__DATABASE__URL="${admin%/*}/zipkit_bench"
export ZIPKIT__DATABASE__MAX_CONNECTIONS=16
export ZIPKIT__BROKER__URL="$ZIPKIT_TEST_AMQP_URL/%2f"
export ZIPKIT__BROKER__QUEUE_PREFIX="zipkit-bench-$$"
export ZIPKIT__API__PORT=$PORT
export ZIPKIT__TELEMETRY__FILTER=warn
# The bench measures the API, not its rate limits: one client address and one token here.
export ZIPKIT__RATE_LIMITS__API_PER_ADDRESS_PER_MINUTE=100000000
export ZIPKIT__RATE_LIMITS__API_PER_ADDRESS_BURST=100000000
export ZIPKIT__RATE_LIMITS__API_PER_TOKEN_PER_MINUTE=100000000
export ZIPKIT__RATE_LIMITS__API_PER_TOKEN_BURST=100000000
"$bin" migrate >/dev/null

field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
project=$("$bin" --output json project create --name bench | field id)
token=$("$bin" --output json token create --project "$project" --name bench | field secret)
echo "bench-secret" | "$bin" bucket add --project "$project" --service s3 --name bench-archives \
  --access-key-id AKIABENCH --no-test >/dev/null

"$bin" serve &
api=$!
cleanup() {
  kill "$api" 2>/dev/null || true
  wait "$api" 2>/dev/null || true
  # The bench queue holds every published job: delete it with the management API.
  for q in jobs jobs.retry jobs.dead; do
    curl -s -o /dev/null -u guest:guest -X DELETE \
      "${ZIPKIT_TEST_RABBITMQ_API/guest:guest@/}/api/queues/%2f/$ZIPKIT__BROKER__QUEUE_PREFIX.$q" || true
  done
  psql -q "$admin" -c "DROP DATABASE IF EXISTS zipkit_bench WITH (FORCE)" >/dev/null || true
  rm -f "$lua_post" "$lua_get"
}
lua_post=$(mktemp --suffix=.lua)
lua_get=$(mktemp --suffix=.lua)
trap cleanup EXIT
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.1; done

body='{"bucket_name":"bench-archives","key":"exports/bench.zip","metadata":{"run":"bench"},"urls":['
for i in $(seq 0 9); do
  [ "$i" -gt 0 ] && body+=','
  body+="{\"url\":\"https://example.com/files/$i.pdf\",\"filename\":\"docs/file-$i.pdf\"}"
done
body+=']}'
cat >"$lua_post" <<LUA
wrk.method = "POST"
wrk.body = '$body'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $token"
LUA
cat >"$lua_get" <<LUA
wrk.headers["Authorization"] = "Bearer $token"
LUA

zip=$(curl -fsS -X POST -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
  -d "$body" "http://127.0.0.1:$PORT/v1/zips" | sed -E 's/.*"uuid":"([0-9a-f-]{36})".*/\1/')

report() { # title, wrk output
  local rps p50 p99 non2xx
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$2")
  p50=$(awk '$1=="50%" {print $2}' <<<"$2")
  p99=$(awk '$1=="99%" {print $2}' <<<"$2")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$2")
  printf '%-34s %10s req/s   p50 %8s   p99 %8s   non-2xx %s\n' "$1" "$rps" "$p50" "$p99" "${non2xx:-0}"
}

echo "zipkit-api (release), $CONNECTIONS connections, ${SECONDS_EACH}s each, $(nproc) cores shared with PostgreSQL and RabbitMQ"
post=$(wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_EACH}s" --latency -s "$lua_post" "http://127.0.0.1:$PORT/v1/zips")
report "POST /v1/zips (10 entries)" "$post"
get=$(wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_EACH}s" --latency -s "$lua_get" "http://127.0.0.1:$PORT/v1/zips/$zip")
report "GET /v1/zips/{uuid}" "$get"
