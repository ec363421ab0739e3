#!/usr/bin/env bash
# The product's main job, end to end on this machine: services up, migrations, zipkit-api and
# zipkit-worker started, a demo project, token and bucket set up with the operator CLI, sample
# files (Unicode and nested names) served by a local HTTP server, a zip job posted through the
# API and waited on, and the archive fetched back from the bucket and listed. Exits 0 on success.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOG_TAG=demo
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
cd "$ROOT"

scripts/services.sh up
load_services_env "$ROOT"
# The sample file server and the archive check.
apt_install python3 unzip

PORT=${ZIPKIT_DEMO_PORT:-8080}
FILES_PORT=${ZIPKIT_DEMO_FILES_PORT:-8099}
WORKER_PORT=${ZIPKIT_DEMO_WORKER_PORT:-9090}
port_open "$PORT" && die "port $PORT is taken; set ZIPKIT_DEMO_PORT"
port_open "$FILES_PORT" && die "port $FILES_PORT is taken; set ZIPKIT_DEMO_FILES_PORT"
port_open "$WORKER_PORT" && die "port $WORKER_PORT is taken; set ZIPKIT_DEMO_WORKER_PORT"
admin=$ZIPKIT_TEST_POSTGRES_URL
psql -q "$admin" -tAc "SELECT 1 FROM pg_database WHERE datname = 'zipkit_demo'" | grep -q 1 ||
  psql -q "$admin" -c "CREATE DATABASE zipkit_demo" >/dev/null

export ZIPKIT_ENV=development
export ZIPKIT__DATABASE__URL="${admin%/*}/zipkit_demo"
export ZIPKIT__BROKER__URL="$ZIPKIT_TEST_AMQP_URL/%2f"
export ZIPKIT__BROKER__QUEUE_PREFIX=zipkit-demo
export ZIPKIT__API__PORT=$PORT
export ZIPKIT__WORKER__HTTP_PORT=$WORKER_PORT

log "building zipkit-api, zipkit-worker and the demo's S3 helper"
# Name every target: with only --example, cargo builds that example and no binary.
cargo build --quiet --locked -p zipkit-api -p zipkit-worker -p zipkit-test-support \
  --bin zipkit-api --bin zipkit-worker --example s3
bin=${CARGO_TARGET_DIR:-$ROOT/target}/debug
s3() { "$bin/examples/s3" "$@"; }
"$bin/zipkit-api" migrate

work=$(services_dir "$ROOT")/demo
rm -rf "$work" && mkdir -p "$work/files"
"$bin/zipkit-api" serve >"$work/api.log" 2>&1 &
api=$!
"$bin/zipkit-worker" >"$work/worker.log" 2>&1 &
worker=$!
files=
cleanup() { kill $api $worker $files 2>/dev/null || true; }
trap cleanup EXIT

# The sources: a few files, served by a plain HTTP server.
python3 - "$work/files" <<'PY'
import os, sys
d = sys.argv[1]
open(os.path.join(d, "report.txt"), "w").write("Quarterly report\n" * 2000)
open(os.path.join(d, "data.csv"), "w").write("".join(f"{i},{i*i}\n" for i in range(20000)))
open(os.path.join(d, "photo.jpg"), "wb").write(os.urandom(200_000))
PY
python3 -m http.server "$FILES_PORT" --bind 127.0.0.1 --directory "$work/files" >"$work/files.log" 2>&1 &
files=$!
wait_port "$FILES_PORT" 10 "the sample file server"

# Both binaries answer /readyz (the worker on its probe port) once PostgreSQL and RabbitMQ are up.
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 &&
    curl -fsS "http://127.0.0.1:$WORKER_PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
echo "GET /readyz -> $(curl -sS "http://127.0.0.1:$PORT/readyz")"
curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null || die "zipkit-api is not ready; see $work/api.log"
echo "worker GET /readyz -> $(curl -sS "http://127.0.0.1:$WORKER_PORT/readyz")"
curl -fsS "http://127.0.0.1:$WORKER_PORT/readyz" >/dev/null || die "zipkit-worker is not ready; see $work/worker.log"

# The customer's bucket exists before zipkit is told about it.
bucket="demo-archives"
s3 create-bucket "$bucket"
field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
project=$("$bin/zipkit-api" --output json project create --name "demo $(date +%H:%M:%S)" | field id)
token=$("$bin/zipkit-api" --output json token create --project "$project" --name demo | field secret)
echo "$ZIPKIT_TEST_S3_SECRET_KEY" | "$bin/zipkit-api" bucket add --project "$project" --service s3 --name "$bucket" \
  --endpoint "$ZIPKIT_TEST_S3_ENDPOINT" --path-style --access-key-id "$ZIPKIT_TEST_S3_ACCESS_KEY"

key="exports/demo-$(date +%s).zip"
src="http://127.0.0.1:$FILES_PORT"
body=$(cat <<JSON
{"urls": [
  {"url": "$src/report.txt", "filename": "docs/rapport été.txt"},
  {"url": "$src/data.csv", "filename": "données/数据.csv"},
  {"url": "$src/photo.jpg", "filename": "photos/2026/photo.jpg"}
 ], "bucket_name": "$bucket", "key": "$key", "metadata": {"order_id": "order_456"}}
JSON
)
answer=$(curl -sS -X POST -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -d "$body" \
  "http://127.0.0.1:$PORT/v1/zips")
zip=$(sed -E 's/.*"uuid":"([0-9a-f-]{36})".*/\1/' <<<"$answer")
echo "POST /v1/zips -> zip $zip accepted"

status=none
for _ in $(seq 1 300); do
  job=$(curl -sS -H "Authorization: Bearer $token" "http://127.0.0.1:$PORT/v1/zips/$zip")
  status=$(sed -E 's/.*"status":"([a-z]+)".*/\1/' <<<"$job")
  case "$status" in succeeded | failed | cancelled) break ;; esac
  sleep 0.2
done
echo "GET /v1/zips/$zip -> $job"
[ "$status" = succeeded ] || die "the zip ended $status; see $work/worker.log"

s3 get "$bucket" "$key" "$work/archive.zip"
echo "s3://$bucket/$key:"
python3 - "$work/archive.zip" <<'PY'
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
assert z.testzip() is None, "CRC mismatch"
for i in z.infolist():
    kind = "deflated" if i.compress_type == zipfile.ZIP_DEFLATED else "stored"
    print(f"  {i.file_size:>9}  {i.compress_size:>9}  {kind:<8}  {i.filename}")
PY
unzip -tq "$work/archive.zip"

kill -TERM $api $worker
wait $api || die "zipkit-api did not exit cleanly on SIGTERM"
wait $worker || die "zipkit-worker did not exit cleanly on SIGTERM"
echo "done: the archive was built from 3 sources and written to the bucket. zipkit-api serves the API at http://127.0.0.1:$PORT/v1 and the dashboard at http://127.0.0.1:$PORT/dashboard (sign in as a user made with 'zipkit-api user create'; start it with 'zipkit-api serve')."
