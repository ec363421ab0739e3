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

# Where scripts/services.sh keeps this checkout's services (data, logs, the env file): outside
# the checkout, under /var/tmp, because the servers run as their own users (postgres, rabbitmq),
# who cannot enter a checkout in a mode-700 home directory. One folder per checkout, named after
# it, so two clones never share a cluster by accident. ZIPKIT_SERVICES_DIR overrides it.
services_dir() { # checkout root
  if [ -n "${ZIPKIT_SERVICES_DIR:-}" ]; then echo "$ZIPKIT_SERVICES_DIR"; return; fi
  local name hash
  name=$(basename "$1" | tr -c 'A-Za-z0-9._\n-' '_')
  hash=$(printf '%s' "$1" | sha256sum | cut -c1-8)
  echo "/var/tmp/zipkit-services/$name-$hash"
}

# Loads the endpoints scripts/services.sh up wrote (ZIPKIT_TEST_*).
load_services_env() { # checkout root
  local env_file
  env_file="$(services_dir "$1")/env"
  [ -f "$env_file" ] || die "no $env_file: run scripts/services.sh up first"
  # shellcheck disable=SC1090
  . "$env_file"
}

# Runs a command with only the environment it is given: servers read many unprefixed variables
# (RabbitMQ falls back from RABBITMQ_LOGS to LOGS, from RABBITMQ_NODENAME to NODENAME, …;
# PostgreSQL reads PGDATA, PGPORT, …), and a caller's stray LOGS must not crash a node.
# An array rather than a function, so that `"${CLEAN_ENV[@]}" server &` leaves the server's own
# pid in $! (env execs it), for stopping it later.
CLEAN_ENV=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8)
clean_env() { # [NAME=value ...] command args...
  "${CLEAN_ENV[@]}" "$@"
}
