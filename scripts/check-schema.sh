#!/usr/bin/env bash
# Fails when crates/zipkit-domain/src/schema.rs no longer matches what the migrations build:
# applies every migration to a fresh database with `zipkit-api migrate`, prints the schema with
# diesel_cli and compares (both formatted by rustfmt). Needs scripts/services.sh up.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOG_TAG=schema
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
cd "$ROOT"
load_services_env "$ROOT"
DIESEL=$(scripts/tools.sh diesel)

db="zipkit_schema_check_$$"
admin=$ZIPKIT_TEST_POSTGRES_URL
url="${admin%/*}/$db"
psql_admin() { psql -q -v ON_ERROR_STOP=1 "$admin" -c "$1" >/dev/null; }
trap 'psql_admin "DROP DATABASE IF EXISTS $db WITH (FORCE)"' EXIT
psql_admin "CREATE DATABASE $db"

ZIPKIT__DATABASE__URL=$url cargo run --quiet --locked -p zipkit-api -- migrate >/dev/null || die "migrations failed"
expected=$(mktemp)
"$DIESEL" print-schema --database-url "$url" | rustfmt --edition 2024 --emit stdout >"$expected"
if ! diff -u crates/zipkit-domain/src/schema.rs "$expected"; then
  rm -f "$expected"
  die "schema.rs drifted from migrations/: regenerate it with: diesel print-schema --database-url <migrated db> | rustfmt --edition 2024 > crates/zipkit-domain/src/schema.rs"
fi
rm -f "$expected"
log "schema.rs matches the migrations"
