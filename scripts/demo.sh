#!/usr/bin/env bash
# The product's main job, end to end on this machine. Until the worker builds archives (the
# worker issue), it brings up the services, migrates a demo database, starts zipkit-api and
# zipkit-worker, shows both healthy and ready, and stops them with SIGTERM.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOG_TAG=demo
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
cd "$ROOT"

scripts/services.sh up
# shellcheck disable=SC1091
. .services/env

PORT=${ZIPKIT_DEMO_PORT:-8080}
port_open "$PORT" && die "port $PORT is taken; set ZIPKIT_DEMO_PORT"
admin=$ZIPKIT_TEST_POSTGRES_URL
psql -q "$admin" -tAc "SELECT 1 FROM pg_database WHERE datname = 'zipkit_demo'" | grep -q 1 ||
  psql -q "$admin" -c "CREATE DATABASE zipkit_demo" >/dev/null

export ZIPKIT_ENV=development
export ZIPKIT__DATABASE__URL="${admin%/*}/zipkit_demo"
export ZIPKIT__BROKER__URL="$ZIPKIT_TEST_AMQP_URL/%2f"
export ZIPKIT__BROKER__QUEUE_PREFIX=zipkit-demo
export ZIPKIT__API__PORT=$PORT

log "building zipkit-api and zipkit-worker"
cargo build --quiet --locked -p zipkit-api -p zipkit-worker
bin=$ROOT/target/debug
"$bin/zipkit-api" migrate

mkdir -p .services/demo
"$bin/zipkit-api" serve >.services/demo/api.log 2>&1 &
api=$!
"$bin/zipkit-worker" >.services/demo/worker.log 2>&1 &
worker=$!
trap 'kill $api $worker 2>/dev/null || true' EXIT

for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
echo "GET /healthz -> $(curl -sS "http://127.0.0.1:$PORT/healthz")"
echo "GET /readyz  -> $(curl -sS "http://127.0.0.1:$PORT/readyz")"
curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null || die "zipkit-api is not ready; see .services/demo/api.log"
for _ in $(seq 1 50); do grep -q "zipkit-worker ready" .services/demo/worker.log && break; sleep 0.2; done
grep -q "zipkit-worker ready" .services/demo/worker.log || die "zipkit-worker is not ready; see .services/demo/worker.log"
echo "zipkit-worker: ready (connected to PostgreSQL and RabbitMQ, queue zipkit-demo.jobs declared)"

kill -TERM $api $worker
wait $api || die "zipkit-api did not exit cleanly on SIGTERM"
wait $worker || die "zipkit-worker did not exit cleanly on SIGTERM"
trap - EXIT
echo "both stopped cleanly on SIGTERM. Logs: .services/demo/"
