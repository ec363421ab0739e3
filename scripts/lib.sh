# Helpers shared by the scripts in this folder; sourced, not run.

log() { printf '[%s] %s\n' "${LOG_TAG:-zipkit}" "$*" >&2; }
die() { printf '[%s] error: %s\n' "${LOG_TAG:-zipkit}" "$*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port seconds what
  local i
  for ((i = 0; i < $2 * 10; i++)); do port_open "$1" && return 0; sleep 0.1; done
  die "$3 did not start listening on 127.0.0.1:$1 within $2 s"
}

APT_UPDATED=
apt_install() { # packages...: installs the Debian packages that are missing (needs root)
  local missing=() p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "need root (or sudo) to apt-get install ${missing[*]}"
    sudo=sudo
  fi
  log "installing ${missing[*]} (apt-get)"
  if [ -z "$APT_UPDATED" ]; then $sudo apt-get update -qq >/dev/null; APT_UPDATED=1; fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

cargo_bin() { # name: path of a cargo-installed executable, if any
  command -v "$1" 2>/dev/null && return 0
  local p="${CARGO_HOME:-$HOME/.cargo}/bin/$1"
  [ -x "$p" ] && echo "$p"
  return 0
}
