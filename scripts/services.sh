#!/usr/bin/env bash
# Real services on loopback for tests and the demo: PostgreSQL, RabbitMQ (with its management
# API), and an S3-compatible store (s3s-fs, which checks SigV4 signatures).
#
#   scripts/services.sh up       install what is missing, start what is not running (idempotent)
#   scripts/services.sh down     stop what this script started (never the machine's own services)
#   scripts/services.sh status   say what listens where
#
# A PostgreSQL on 127.0.0.1:5432 (trust auth) or a RabbitMQ on 127.0.0.1:5672 (guest/guest) that
# already runs is used as it is (unless ZIPKIT_SERVICES_REUSE=0); otherwise the script starts its
# own on other loopback ports. Everything it starts keeps its state in one folder per checkout,
# outside the checkout (services_dir in lib.sh: /var/tmp/zipkit-services/<checkout>-<hash>, or
# $ZIPKIT_SERVICES_DIR), where the postgres and rabbitmq users can reach it whatever the
# checkout's path and permissions. It writes the endpoints to env in that folder, which the other
# scripts load. `down` stops what it started and removes the folder.
# Needs root on Debian for apt-get and for running the servers as their own users.
#
# Ports of the servers it starts (for a second set beside the first, as scripts/newcomer.sh does):
# ZIPKIT_SERVICES_PG_PORT, _AMQP_PORT, _MGMT_PORT, _DIST_PORT, and ZIPKIT_S3_PORT.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOG_TAG=services
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

STATE=$(services_dir "$ROOT")
ENV_FILE=$STATE/env

REUSE=${ZIPKIT_SERVICES_REUSE:-1}
OWN_PG_PORT=${ZIPKIT_SERVICES_PG_PORT:-54329}
OWN_AMQP_PORT=${ZIPKIT_SERVICES_AMQP_PORT:-56729}
OWN_MGMT_PORT=${ZIPKIT_SERVICES_MGMT_PORT:-15679}
OWN_DIST_PORT=${ZIPKIT_SERVICES_DIST_PORT:-25679}
# Erlang node names are unique per host: name the node after the state folder.
OWN_RABBIT_NODE="zipkit-$(printf '%s' "$STATE" | sha256sum | cut -c1-8)@localhost"
S3_PORT=${ZIPKIT_S3_PORT:-9900}
S3_ACCESS_KEY=zipkit-dev
S3_SECRET_KEY=zipkit-dev-secret
S3S_FS_VERSION=0.14.1

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

# As the postgres user, from / (it may not enter the caller's directory), in a clean environment.
as_postgres() { (cd / && clean_env runuser -u postgres -- "$@"); }

# ---------------------------------------------------------------- PostgreSQL
postgres_up() {
  if [ "$REUSE" != 0 ] && port_open 5432 && [ ! -f "$STATE/pg/own" ]; then
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
      as_postgres "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
    fi
    as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w \
      -o "-p $OWN_PG_PORT -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off" start >/dev/null ||
      { tail -n 20 "$dir/postgres.log" >&2; die "PostgreSQL did not start (log above: $dir/postgres.log)"; }
    touch "$dir/own"
  fi
  wait_port "$OWN_PG_PORT" 20 PostgreSQL
  PG_URL="postgres://postgres@127.0.0.1:$OWN_PG_PORT/postgres"
}

postgres_down() {
  local bin dir=$STATE/pg
  [ -f "$dir/own" ] || return 0
  bin=$(pg_bin)
  as_postgres "$bin/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1 || true
  rm -f "$dir/own"
  log "PostgreSQL: stopped the loopback cluster"
}

# ---------------------------------------------------------------- RabbitMQ
# Runs a RabbitMQ command for this script's own node with every setting it reads given here and
# nothing inherited from the caller (see clean_env).
as_own_rabbit() {
  local dir=$STATE/rabbitmq
  (cd / && clean_env \
    RABBITMQ_NODENAME="$OWN_RABBIT_NODE" \
    RABBITMQ_CONFIG_FILE="$dir/rabbitmq" \
    RABBITMQ_MNESIA_BASE="$dir/mnesia" \
    RABBITMQ_LOG_BASE="$dir/log" \
    RABBITMQ_LOGS="$dir/log/rabbit.log" \
    RABBITMQ_PID_FILE="$dir/rabbitmq.pid" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
    RABBITMQ_DIST_PORT="$OWN_DIST_PORT" \
    ERL_EPMD_ADDRESS=127.0.0.1 \
    "$@")
}

rabbitmq_up() {
  if [ "$REUSE" != 0 ] && port_open 5672 && [ ! -f "$STATE/rabbitmq/own" ]; then
    AMQP_URL="amqp://guest:guest@127.0.0.1:5672"
    MGMT_URL="http://guest:guest@127.0.0.1:15672"
    if ! port_open 15672; then
      log "RabbitMQ: enabling the management plugin on the running broker"
      (cd / && clean_env rabbitmq-plugins enable rabbitmq_management >/dev/null)
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
    rm -f "$dir/log/erl_crash.dump"
    cat >"$dir/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$OWN_AMQP_PORT
management.tcp.ip = 127.0.0.1
management.tcp.port = $OWN_MGMT_PORT
loopback_users.guest = true
CONF
    echo '[rabbitmq_management].' >"$dir/enabled_plugins"
    chown -R rabbitmq: "$dir"
    as_own_rabbit rabbitmq-server -detached >/dev/null 2>&1
    touch "$dir/own"
  fi
  # The detached node registers with epmd only after a few seconds, so wait on its ports; a node
  # that crashed at start-up leaves erl_crash.dump, so stop waiting then.
  local i
  for ((i = 0; i < 900; i++)); do
    port_open "$OWN_AMQP_PORT" && break
    if [ -f "$dir/log/erl_crash.dump" ]; then
      tail -n 20 "$dir"/log/*.log >&2 2>/dev/null || true
      die "RabbitMQ crashed at start-up (see $dir/log)"
    fi
    sleep 0.1
  done
  wait_port "$OWN_AMQP_PORT" 1 "RabbitMQ (see $dir/log)"
  wait_port "$OWN_MGMT_PORT" 60 "RabbitMQ management"
  AMQP_URL="amqp://guest:guest@127.0.0.1:$OWN_AMQP_PORT"
  MGMT_URL="http://guest:guest@127.0.0.1:$OWN_MGMT_PORT"
}

rabbitmq_down() {
  [ -f "$STATE/rabbitmq/own" ] || return 0
  # With the pid file, stop returns once the node's process has exited.
  as_own_rabbit rabbitmqctl -n "$OWN_RABBIT_NODE" stop "$STATE/rabbitmq/rabbitmq.pid" >/dev/null 2>&1 || true
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
  # Our own s3s-fs, still running: keep it (on the port it took).
  if [ -f "$STATE/s3/pid" ] && kill -0 "$(cat "$STATE/s3/pid")" 2>/dev/null; then
    [ ! -f "$STATE/s3/port" ] || S3_PORT=$(cat "$STATE/s3/port")
  else
    # The port is another checkout's store (or anything else): never share it, take the next
    # free one, unless the port was asked for.
    if port_open "$S3_PORT"; then
      [ -z "${ZIPKIT_S3_PORT:-}" ] || die "S3: 127.0.0.1:$S3_PORT (ZIPKIT_S3_PORT) is taken"
      while port_open "$S3_PORT"; do S3_PORT=$((S3_PORT + 1)); done
    fi
    mkdir -p "$STATE/s3/data"
    log "S3: starting s3s-fs on 127.0.0.1:$S3_PORT over $STATE/s3/data"
    "${CLEAN_ENV[@]}" nohup "$bin" --host 127.0.0.1 --port "$S3_PORT" --access-key "$S3_ACCESS_KEY" --secret-key "$S3_SECRET_KEY" \
      "$STATE/s3/data" >"$STATE/s3/s3s-fs.log" 2>&1 &
    echo $! >"$STATE/s3/pid"
    echo "$S3_PORT" >"$STATE/s3/port"
  fi
  wait_port "$S3_PORT" 20 s3s-fs
  S3_ENDPOINT="http://127.0.0.1:$S3_PORT"
}

s3_down() {
  [ -f "$STATE/s3/pid" ] || return 0
  local pid i
  pid=$(cat "$STATE/s3/pid")
  kill "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$STATE/s3/pid" "$STATE/s3/port"
  log "S3: stopped s3s-fs"
}

# ---------------------------------------------------------------- commands
write_env() {
  cat >"$ENV_FILE" <<ENV
# Written by scripts/services.sh up; loaded by the other scripts (load_services_env).
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
  [ ! -f "$STATE/s3/port" ] || S3_PORT=$(cat "$STATE/s3/port")
  for pair in "PostgreSQL:5432" "PostgreSQL(own):$OWN_PG_PORT" "RabbitMQ:5672" "RabbitMQ(own):$OWN_AMQP_PORT" \
    "RabbitMQ-management:15672" "RabbitMQ-management(own):$OWN_MGMT_PORT" "S3(s3s-fs):$S3_PORT"; do
    name=${pair%%:*} port=${pair##*:}
    if port_open "$port"; then echo "$name listening on 127.0.0.1:$port"; fi
  done
}

case "${1:-}" in
  up)
    # World-readable, so the service users can reach their own folders inside.
    mkdir -p "$STATE" && chmod 755 "$(dirname "$STATE")" "$STATE"
    touch "$STATE/.zipkit-services"
    postgres_up
    rabbitmq_up
    s3_up
    write_env
    echo "PostgreSQL  ${PG_URL}"
    echo "RabbitMQ    ${AMQP_URL/guest:guest@/}  (management ${MGMT_URL/guest:guest@/})"
    echo "S3 store    ${S3_ENDPOINT}  (s3s-fs, access key $S3_ACCESS_KEY)"
    echo "state in    $STATE  (endpoints in env; 'scripts/services.sh down' stops and removes it)"
    ;;
  down)
    s3_down
    rabbitmq_down
    postgres_down
    # The marker guards against removing a folder this script did not make (ZIPKIT_SERVICES_DIR).
    if [ -f "$STATE/.zipkit-services" ]; then
      rm -rf "$STATE"
      rmdir "$(dirname "$STATE")" 2>/dev/null || true
      log "removed $STATE"
    fi
    ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
