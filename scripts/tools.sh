#!/usr/bin/env bash
# Developer tools the checks need, installed once (idempotent, as root on Debian):
#   scripts/tools.sh diesel    diesel_cli, to compare schema.rs with the migrations
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOG_TAG=tools
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

DIESEL_CLI_VERSION=2.3.14

case "${1:-}" in
  diesel)
    if [ -z "$(cargo_bin diesel)" ]; then
      apt_install libpq-dev
      log "installing diesel_cli $DIESEL_CLI_VERSION (cargo install, a few minutes, once)"
      cargo install diesel_cli --version "$DIESEL_CLI_VERSION" --locked --no-default-features --features postgres --quiet
    fi
    cargo_bin diesel
    ;;
  *) echo "usage: $0 diesel" >&2; exit 2 ;;
esac
