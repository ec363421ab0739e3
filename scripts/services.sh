#!/usr/bin/env bash
# Real services on loopback for tests and the demo: PostgreSQL, RabbitMQ (with its management
# API), and an S3-compatible store (s3s-fs, which checks SigV4 signatures).
#
#   scripts/services.sh up       install what is missing, start what is not running (idempotent)
#   scripts/services.sh down     stop what this script started (never the machine's own services)
#   scripts/services.sh status   say what listens where
#
# A PostgreSQL on 127.0.0.1:5432 (trust auth) or a RabbitMQ on 127.0.0.1:5672 (guest/guest) that
# already runs is used as it is; otherwise the script starts its own on other loopback ports,
# with its data under $ZIPKIT_SERVICES_DIR (default: <repo>/.services). It writes the endpoints to
# $ZIPKIT_SERVICES_DIR/env, which scripts/test.sh and scripts/demo.sh source.
# Needs root on Debian for apt-get and for running the servers as their own users.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${ZIPKIT_SERVICES_DIR:-$ROOT/.services}
ENV_FILE=$STATE/env

OWN_PG_PORT=54329
OWN_AMQP_PORT=56729
OWN_MGMT_PORT=15679
OWN_DIST_PORT=25679
OWN_RABBIT_NODE=zipkit@localhost
S3_PORT=${ZIPKIT_S3_PORT:-9900}
S3_ACCESS_KEY=zipkit-dev
S3_SECRET_KEY=zipkit-dev-secret
S3S_FS_VERSION=0.14.1

LOG_TAG=services
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

# ---------------------------------------------------------------- PostgreSQL
postgres_up() {
  if port_open 5432 && [ ! -f "$STATE/pg/own" ]; then
    PG_URL="postgres://postgres@127.0.0.1:5432/postgres"
    command -v psql >/dev/null || apt_install postgresql-client
    log "PostgreSQL: using the one already on 127.0.0.1:5432"
    return
  fi
  apt_install postgresql
  local bin dir=$STATE/pg
  bin=$(pg_bin)
  [ -n "$bin" ] || die "PostgreSQL binaries not found under /usr/lib/postgresql"
  if ! port_open "$OWN_PG_PORT"; then
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      log "PostgreSQL: creating a loopback cluster in $dir"
      rm -rf "$dir" && mkdir -p "$dir"
      chown postgres: "$dir"
      runuser -u postgres -- "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
    fi
    runuser -u postgres -- "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w \
      -o "-p $OWN_PG_PORT -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off" start >/dev/null
    touch "$dir/own"
  fi
  wait_port "$OWN_PG_PORT" 20 PostgreSQL
  PG_URL="postgres://postgres@127.0.0.1:$OWN_PG_PORT/postgres"
}

postgres_down() {
  local bin dir=$STATE/pg
  [ -f "$dir/own" ] || return 0
  bin=$(pg_bin)
  runuser -u postgres -- "$bin/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1 || true
  rm -f "$dir/own"
  log "PostgreSQL: stopped the loopback cluster"
}

# ---------------------------------------------------------------- RabbitMQ
rabbit_own_env() {
  export RABBITMQ_NODENAME=$OWN_RABBIT_NODE
  export RABBITMQ_CONFIG_FILE=$STATE/rabbitmq/rabbitmq # .conf is appended
  export RABBITMQ_MNESIA_BASE=$STATE/rabbitmq/mnesia
  export RABBITMQ_LOG_BASE=$STATE/rabbitmq/log
  export RABBITMQ_PID_FILE=$STATE/rabbitmq/rabbitmq.pid
  export RABBITMQ_ENABLED_PLUGINS_FILE=$STATE/rabbitmq/enabled_plugins
  export RABBITMQ_DIST_PORT=$OWN_DIST_PORT
  export ERL_EPMD_ADDRESS=127.0.0.1
}

rabbitmq_up() {
  if port_open 5672 && [ ! -f "$STATE/rabbitmq/own" ]; then
    AMQP_URL="amqp://guest:guest@127.0.0.1:5672"
    MGMT_URL="http://guest:guest@127.0.0.1:15672"
    if ! port_open 15672; then
      log "RabbitMQ: enabling the management plugin on the running broker"
      rabbitmq-plugins enable rabbitmq_management >/dev/null
      wait_port 15672 60 "RabbitMQ management"
    fi
    log "RabbitMQ: using the one already on 127.0.0.1:5672"
    return
  fi
  apt_install rabbitmq-server
  local dir=$STATE/rabbitmq
  if ! port_open "$OWN_AMQP_PORT"; then
    log "RabbitMQ: starting a loopback node in $dir"
    mkdir -p "$dir/mnesia" "$dir/log"
    cat >"$dir/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$OWN_AMQP_PORT
management.tcp.ip = 127.0.0.1
management.tcp.port = $OWN_MGMT_PORT
loopback_users.guest = true
CONF
    echo '[rabbitmq_management].' >"$dir/enabled_plugins"
    chown -R rabbitmq: "$dir"
    (rabbit_own_env; rabbitmq-server -detached >/dev/null 2>&1)
    touch "$dir/own"
  fi
  # The detached node registers with epmd only after a few seconds, so wait on its ports.
  wait_port "$OWN_AMQP_PORT" 90 "RabbitMQ (see $dir/log)"
  wait_port "$OWN_MGMT_PORT" 60 "RabbitMQ management"
  AMQP_URL="amqp://guest:guest@127.0.0.1:$OWN_AMQP_PORT"
  MGMT_URL="http://guest:guest@127.0.0.1:$OWN_MGMT_PORT"
}

rabbitmq_down() {
  [ -f "$STATE/rabbitmq/own" ] || return 0
  (rabbit_own_env; rabbitmqctl -n "$OWN_RABBIT_NODE" stop >/dev/null 2>&1) || true
  rm -f "$STATE/rabbitmq/own"
  log "RabbitMQ: stopped the loopback node"
}

# ---------------------------------------------------------------- S3 store
s3_up() {
  local bin
  bin=$(cargo_bin s3s-fs)
  if [ -z "$bin" ]; then
    log "S3: installing s3s-fs $S3S_FS_VERSION (cargo install, a few minutes, once)"
    cargo install "s3s-fs@$S3S_FS_VERSION" --locked --features binary --quiet
    bin=$(cargo_bin s3s-fs)
  fi
  if ! port_open "$S3_PORT"; then
    mkdir -p "$STATE/s3/data"
    log "S3: starting s3s-fs over $STATE/s3/data"
    nohup "$bin" --host 127.0.0.1 --port "$S3_PORT" --access-key "$S3_ACCESS_KEY" --secret-key "$S3_SECRET_KEY" \
      "$STATE/s3/data" >"$STATE/s3/s3s-fs.log" 2>&1 &
    echo $! >"$STATE/s3/pid"
  fi
  wait_port "$S3_PORT" 20 s3s-fs
  S3_ENDPOINT="http://127.0.0.1:$S3_PORT"
}

s3_down() {
  [ -f "$STATE/s3/pid" ] || return 0
  kill "$(cat "$STATE/s3/pid")" 2>/dev/null || true
  rm -f "$STATE/s3/pid"
  log "S3: stopped s3s-fs"
}

# ---------------------------------------------------------------- commands
write_env() {
  cat >"$ENV_FILE" <<ENV
# Written by scripts/services.sh up; sourced by scripts/test.sh and scripts/demo.sh.
export ZIPKIT_TEST_POSTGRES_URL=$PG_URL
export ZIPKIT_TEST_AMQP_URL=$AMQP_URL
export ZIPKIT_TEST_RABBITMQ_API=$MGMT_URL
export ZIPKIT_TEST_S3_ENDPOINT=$S3_ENDPOINT
export ZIPKIT_TEST_S3_ACCESS_KEY=$S3_ACCESS_KEY
export ZIPKIT_TEST_S3_SECRET_KEY=$S3_SECRET_KEY
ENV
}

status() {
  local name port
  for pair in "PostgreSQL:5432" "PostgreSQL(own):$OWN_PG_PORT" "RabbitMQ:5672" "RabbitMQ(own):$OWN_AMQP_PORT" \
    "RabbitMQ-management:15672" "RabbitMQ-management(own):$OWN_MGMT_PORT" "S3(s3s-fs):$S3_PORT"; do
    name=${pair%%:*} port=${pair##*:}
    if port_open "$port"; then echo "$name listening on 127.0.0.1:$port"; fi
  done
}

case "${1:-}" in
  up)
    mkdir -p "$STATE"
    postgres_up
    rabbitmq_up
    s3_up
    write_env
    echo "PostgreSQL  ${PG_URL}"
    echo "RabbitMQ    ${AMQP_URL/guest:guest@/}  (management ${MGMT_URL/guest:guest@/})"
    echo "S3 store    ${S3_ENDPOINT}  (s3s-fs, access key $S3_ACCESS_KEY)"
    echo "endpoints written to $ENV_FILE"
    ;;
  down)
    s3_down
    rabbitmq_down
    postgres_down
    ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
