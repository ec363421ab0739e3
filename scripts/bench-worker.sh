#!/usr/bin/env bash
# Worker benchmark (not a test): release builds of zipkit-worker and zipkit-bench, a local HTTP
# source server (in the bench process) and the local S3-compatible store (s3s-fs). Prints, per
# case, wall time, throughput, the worker's CPU time and peak RSS, and the ceiling measured in
# the same run; then deflate throughput against single-threaded level 6 on the same bytes.
# Figures go in docs/PERFORMANCE.md.
# Needs about 30 GiB free disk (the ZIP64 case writes a 4.5 GiB object; the destination-store
# case eight 1 GiB objects and two 8 GiB archives, with s3s-fs's part files; all deleted afterwards).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOG_TAG=bench
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
cd "$ROOT"

scripts/services.sh up >/dev/null
load_services_env "$ROOT"
log "building zipkit-worker and zipkit-bench (release)"
cargo build --release --locked --quiet -p zipkit-worker -p zipkit-bench
release=${CARGO_TARGET_DIR:-$ROOT/target}/release
exec "$release/zipkit-bench" "$release/zipkit-worker"
