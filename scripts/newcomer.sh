#!/usr/bin/env bash
# The release check: the README followed as a newcomer would, without touching this machine's
# own services or this checkout.
#
#   scripts/newcomer.sh            the main job (scripts/demo.sh), twice
#   scripts/newcomer.sh --tests    the main job, then the tests (scripts/test.sh), twice
#
# Clones this repository's committed HEAD into a directory of mode 700 (as root's home is), with
# stray variables in the environment that servers are known to read (LOGS, NODENAME, PGDATA, …),
# and runs the README's commands there against services of its own on free loopback ports (never
# a PostgreSQL or RabbitMQ the machine already runs), with a fresh cargo target folder, as a new
# clone has. The second round runs over the services the first one left up, as a user's second
# try does. Then it stops those services and removes the clone (kept, with its logs, on failure).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOG_TAG=newcomer
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

with_tests=
case "${1:-}" in
  --tests) with_tests=1 ;;
  "") ;;
  *) echo "usage: $0 [--tests]" >&2; exit 2 ;;
esac

taken=()
free_port() { # a loopback port nothing listens on and not handed out before
  local p
  while :; do
    p=$((20000 + RANDOM % 10000))
    [[ " ${taken[*]} " == *" $p "* ]] && continue
    port_open "$p" && continue
    taken+=("$p")
    echo "$p"
    return
  done
}

home=$(mktemp -d /tmp/zipkit-newcomer.XXXXXX)
chmod 700 "$home"
clone=$home/zipkit
git clone --quiet "$ROOT" "$clone"
log "cloned $(git -C "$clone" rev-parse --short HEAD) into $clone (parent mode $(stat -c %a "$home"))"

# The clone's own services and demo ports, so nothing it does meets what already runs here.
export ZIPKIT_SERVICES_REUSE=0
ZIPKIT_SERVICES_PG_PORT=$(free_port)
ZIPKIT_SERVICES_AMQP_PORT=$(free_port)
ZIPKIT_SERVICES_MGMT_PORT=$(free_port)
ZIPKIT_SERVICES_DIST_PORT=$(free_port)
ZIPKIT_S3_PORT=$(free_port)
ZIPKIT_DEMO_PORT=$(free_port)
ZIPKIT_DEMO_FILES_PORT=$(free_port)
ZIPKIT_DEMO_WORKER_PORT=$(free_port)
export ZIPKIT_SERVICES_PG_PORT ZIPKIT_SERVICES_AMQP_PORT ZIPKIT_SERVICES_MGMT_PORT \
  ZIPKIT_SERVICES_DIST_PORT ZIPKIT_S3_PORT ZIPKIT_DEMO_PORT ZIPKIT_DEMO_FILES_PORT \
  ZIPKIT_DEMO_WORKER_PORT
unset ZIPKIT_SERVICES_DIR CARGO_TARGET_DIR
# What a user's shell may hold: names RabbitMQ and PostgreSQL read when set.
export LOGS=/tmp NODENAME=stray@nowhere CONFIG_FILE=/nonexistent/rabbitmq MNESIA_BASE=/nonexistent \
  LOG_BASE=/nonexistent PGDATA=/nonexistent PGPORT=1

ok=
finish() {
  (cd "$clone" && scripts/services.sh down) || true
  # What `down` stopped must be gone.
  local port
  for port in "$ZIPKIT_SERVICES_PG_PORT" "$ZIPKIT_SERVICES_AMQP_PORT" "$ZIPKIT_SERVICES_MGMT_PORT" "$ZIPKIT_S3_PORT"; do
    if port_open "$port"; then ok=; log "error: something still listens on 127.0.0.1:$port after services.sh down"; fi
  done
  if [ -n "$ok" ]; then
    rm -rf "$home"
  else
    log "failed: the clone and its logs stay in $clone (remove $home when done)"
    exit 1
  fi
}
trap finish EXIT

step() { # name command...
  local start=$SECONDS
  log "round $round: $*"
  (cd "$clone" && "$@") >"$home/round$round-${1##*/}.log" 2>&1 ||
    { tail -n 40 "$home/round$round-${1##*/}.log" >&2; die "round $round: $* failed (log: $home/round$round-${1##*/}.log)"; }
  log "round $round: $* passed in $((SECONDS - start)) s"
}

for round in 1 2; do
  step scripts/demo.sh
  [ -z "$with_tests" ] || step scripts/test.sh
done
ok=1
log "the README's commands work in a fresh clone in a mode-700 directory, twice"
