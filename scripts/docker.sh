#!/usr/bin/env bash
# A private Docker engine for the container tests, and zipkit's image built with it:
#   scripts/docker.sh up      installs docker.io and debootstrap (apt-get, as root) if missing and
#                             starts dockerd with its own socket and data under the state dir,
#                             with no bridge network and no iptables: containers use host
#                             networking only, so traffic stays on loopback
#   scripts/docker.sh images  makes the base images offline-friendly from Debian's packages
#                             (debootstrap), tagged as deploy/Dockerfile's defaults, builds
#                             zipkit's image from deploy/Dockerfile, and stand-ins for the images
#                             deploy/compose.yaml pins (scripts/standins/); prints zipkit's name
#   scripts/docker.sh standins only the stand-ins for deploy/compose.yaml's images
#   scripts/docker.sh down    stops that dockerd by its PID
#   scripts/docker.sh env     prints `export DOCKER_HOST=…` for a shell
# State in $ZIPKIT_DOCKER_DIR (default /var/tmp/zipkit-docker); base images are built once.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOG_TAG=docker
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

STATE=${ZIPKIT_DOCKER_DIR:-/var/tmp/zipkit-docker}
SOCKET=$STATE/docker.sock
PIDFILE=$STATE/dockerd.pid
export DOCKER_HOST=unix://$SOCKET
RUNTIME_BASE=debian:bookworm-slim
# The Rust release the workspace declares (rust-version), as the official image would be tagged.
RUST_VERSION=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml")
BUILDER_BASE=rust:$RUST_VERSION-slim-bookworm
IMAGE=${ZIPKIT_IMAGE:-zipkit:test}
MIRROR=${ZIPKIT_DEBIAN_MIRROR:-http://deb.debian.org/debian}

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

up() {
  command -v dockerd >/dev/null || apt_install docker.io
  command -v debootstrap >/dev/null || apt_install debootstrap
  mkdir -p "$STATE"
  if running && docker info >/dev/null 2>&1; then
    return 0
  fi
  log "starting dockerd (no bridge, no iptables; socket $SOCKET)"
  # --bridge=none: no docker0 on a private range; every container runs with --network host.
  dockerd --host "$DOCKER_HOST" --pidfile "$PIDFILE" --data-root "$STATE/data" \
    --exec-root "$STATE/exec" --bridge=none --iptables=false --ip6tables=false --ip-masq=false \
    >"$STATE/dockerd.log" 2>&1 &
  for _ in $(seq 1 100); do
    docker info >/dev/null 2>&1 && return 0
    sleep 0.3
  done
  tail -20 "$STATE/dockerd.log" >&2
  die "dockerd did not start"
}

down() {
  if running; then
    local pid
    pid=$(cat "$PIDFILE")
    log "stopping dockerd (pid $pid)"
    kill "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$PIDFILE"
  # dockerd leaves its default network namespace mounted.
  local ns
  for ns in "$STATE"/exec/netns/*; do
    mountpoint -q "$ns" 2>/dev/null && umount "$ns"
  done
  return 0
}

# debootstrap ROOT with extra packages, imported as TAG (once).
debian_image() { # tag packages
  local tag=$1 packages=$2 root
  docker image inspect "$tag" >/dev/null 2>&1 && return 0
  root=$(mktemp -d "$STATE/rootfs.XXXXXX")
  log "debootstrap bookworm minbase${packages:+ + $packages} for $tag"
  debootstrap --variant=minbase ${packages:+--include="$packages"} bookworm "$root" "$MIRROR" >"$STATE/debootstrap.log" 2>&1 \
    || { tail -20 "$STATE/debootstrap.log" >&2; die "debootstrap failed"; }
  # What Debian's slim images leave out too: documentation, manuals, translations, apt caches.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc \
    "$root"/usr/share/man "$root"/usr/share/info "$root"/usr/share/locale "$root"/var/log/*
  if [ "$tag" = "$BUILDER_BASE" ]; then
    # The Rust toolchain this machine builds with (no registry is reachable for rust:* images).
    local sysroot
    sysroot=$(rustc --print sysroot)
    mkdir -p "$root/usr/local/rust"
    cp -a "$sysroot/bin" "$sysroot/lib" "$root/usr/local/rust/"
    [ -d "$sysroot/libexec" ] && cp -a "$sysroot/libexec" "$root/usr/local/rust/"
    # And this machine's CA bundle (a TLS-inspecting proxy's CA included), so cargo in the
    # builder reaches the registry as it does here. The runtime image keeps Debian's own.
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  fi
  tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' - "$tag" >/dev/null
  rm -rf "$root"
}

# The image deploy/compose.yaml pins for SERVICE, as written there.
compose_image() { # service
  sed -n "/^  $1:\$/,/^  [a-z-]*:\$/s/^    image: //p" "$ROOT/deploy/compose.yaml" | head -1
}

# Builds a stand-in from scripts/standins/NAME, tagged as compose.yaml's image (once).
standin() { # name service [file to add to the context]
  local name=$1 tag context
  tag=$(compose_image "$2")
  [ -n "$tag" ] || die "deploy/compose.yaml names no image for $2"
  docker image inspect "$tag" >/dev/null 2>&1 && return 0
  context=$(mktemp -d "$STATE/standin.XXXXXX")
  cp -a "$ROOT/scripts/standins/$name/." "$context/"
  [ -z "${3:-}" ] || cp "$3" "$context/"
  log "building the stand-in $tag from Debian's packages (scripts/standins/$name)"
  docker build --network host -t "$tag" "$context" >"$STATE/standin-$name.log" 2>&1 \
    || { tail -30 "$STATE/standin-$name.log" >&2; die "building the $name stand-in failed"; }
  rm -rf "$context"
}

standins() {
  local s3s_fs
  s3s_fs=$(cargo_bin s3s-fs)
  [ -n "$s3s_fs" ] || die "s3s-fs is not installed (scripts/services.sh up installs it)"
  standin postgres postgres
  standin rabbitmq rabbitmq
  standin minio minio "$s3s_fs"
}

images() {
  up
  # The runtime base is minbase and nothing more, as debian:bookworm-slim is (no CA bundle, no
  # openssl): whatever zipkit needs at run time, deploy/Dockerfile must install, or it fails here
  # as it would in a real cluster. tests/it/container.rs checks the base holds no extra package.
  debian_image "$RUNTIME_BASE" ""
  debian_image "$BUILDER_BASE" ca-certificates,build-essential,pkg-config
  log "building $IMAGE from deploy/Dockerfile (release build inside the builder)"
  docker build --network host -f "$ROOT/deploy/Dockerfile" -t "$IMAGE" "$ROOT" >"$STATE/build.log" 2>&1 \
    || { tail -40 "$STATE/build.log" >&2; die "docker build failed (log: $STATE/build.log)"; }
  log "$IMAGE: $(docker image inspect "$IMAGE" --format '{{.Size}}' | awk '{printf "%.1f MiB", $1/1048576}')"
  standins
  echo "$IMAGE"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  images) images ;;
  standins) up; standins ;;
  env) echo "export DOCKER_HOST=$DOCKER_HOST" ;;
  *) echo "usage: $0 up|images|standins|down|env" >&2; exit 2 ;;
esac
