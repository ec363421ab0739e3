#!/usr/bin/env bash
# Developer tools the checks need, installed once (idempotent, as root on Debian):
#   scripts/tools.sh diesel         diesel_cli, to compare schema.rs with the migrations
#   scripts/tools.sh schemathesis   schemathesis (PyPI) in its own virtualenv, to test the API
#                                   against its OpenAPI document
# Each prints the path of the executable.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOG_TAG=tools
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

DIESEL_CLI_VERSION=2.3.14
SCHEMATHESIS_VERSION=4.32.5
# Outside any checkout: one per machine and version, like a cargo-installed tool.
SCHEMATHESIS_VENV=/var/tmp/zipkit-tools/schemathesis-$SCHEMATHESIS_VERSION

case "${1:-}" in
  diesel)
    if [ -z "$(cargo_bin diesel)" ]; then
      apt_install libpq-dev
      log "installing diesel_cli $DIESEL_CLI_VERSION (cargo install, a few minutes, once)"
      cargo install diesel_cli --version "$DIESEL_CLI_VERSION" --locked --no-default-features --features postgres --quiet
    fi
    cargo_bin diesel
    ;;
  schemathesis)
    if [ ! -x "$SCHEMATHESIS_VENV/bin/st" ]; then
      command -v python3 >/dev/null || apt_install python3
      python3 -m venv --help >/dev/null 2>&1 && python3 -c 'import ensurepip' 2>/dev/null || apt_install python3-venv
      log "installing schemathesis $SCHEMATHESIS_VERSION into $SCHEMATHESIS_VENV (pip, once)"
      rm -rf "$SCHEMATHESIS_VENV"
      python3 -m venv "$SCHEMATHESIS_VENV"
      "$SCHEMATHESIS_VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" >&2
    fi
    echo "$SCHEMATHESIS_VENV/bin/st"
    ;;
  *) echo "usage: $0 diesel|schemathesis" >&2; exit 2 ;;
esac
