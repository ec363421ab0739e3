#!/bin/sh
# The official image's first start: a cluster owned by POSTGRES_USER with POSTGRES_PASSWORD,
# password authentication over TCP, and POSTGRES_DB; then the server as the postgres user.
set -eu
if [ "${1:-}" = postgres ]; then
  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    user=${POSTGRES_USER:-postgres}
    : "${POSTGRES_PASSWORD:?the official image refuses to start without POSTGRES_PASSWORD}"
    chown postgres:postgres "$PGDATA" && chmod 700 "$PGDATA"
    pwfile=$(mktemp) && printf '%s' "$POSTGRES_PASSWORD" >"$pwfile" && chown postgres "$pwfile"
    gosu postgres initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" \
      --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    gosu postgres pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -k /tmp" -w start >/dev/null
    db=${POSTGRES_DB:-$user}
    if [ "$db" != postgres ]; then
      gosu postgres psql -h /tmp -U "$user" -d postgres -v ON_ERROR_STOP=1 \
        -c "CREATE DATABASE \"$db\"" >/dev/null
    fi
    gosu postgres pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  fi
  exec gosu postgres "$@"
fi
exec "$@"
