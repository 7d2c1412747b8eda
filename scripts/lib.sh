# shellcheck shell=bash
# Shared by scripts/up, scripts/down and scripts/test: paths, installing what
# is missing, and starting infrastructure that is not running yet.
# Source it; do not run it.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VAR="$ROOT/var"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/mp3converter"
# The build lives outside the clone so fresh clones (CI) reuse it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
VENV="$CACHE/venv"
mkdir -p "$VAR/log" "$VAR/run" "$VAR/mail" "$CACHE"
# var/ holds password hashes (auth.db), every user's files (mongo/), mail,
# logs with addresses in them and credentials: its owner's only (the
# servers the scripts start write with umask 077).
chmod 700 "$VAR" "$VAR/log" "$VAR/mail"

# Every step is stamped with the time since the outermost script started, so a
# slow CI run shows where its minutes went.
export MP3C_STARTED_AT=${MP3C_STARTED_AT:-$(date +%s)}
log() {
  local elapsed=$(( $(date +%s) - MP3C_STARTED_AT ))
  printf '\033[1m==> [%dm%02ds] %s\033[0m\n' $((elapsed / 60)) $((elapsed % 60)) "$*" >&2
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for_port() { # PORT SECONDS NAME
  local port=$1 seconds=$2 name=$3 i
  for ((i = 0; i < seconds * 5; i++)); do
    port_open "$port" && return 0
    sleep 0.2
  done
  echo "error: $name did not open port $port within ${seconds}s" >&2
  return 1
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# A command with a time limit where one can be set: GNU `timeout`, or
# Homebrew's `gtimeout` on macOS, which has neither by default (there the
# command runs without a limit rather than failing at once).
run_with_timeout() { # SECONDS COMMAND...
  local seconds=$1
  shift
  if command -v timeout >/dev/null; then timeout "$seconds" "$@"
  elif command -v gtimeout >/dev/null; then gtimeout "$seconds" "$@"
  else "$@"
  fi
}

# True on the system the images' runtime is (debian:bookworm-slim: Debian
# 12), the only one whose binaries, linked against its FFmpeg and glibc, run
# in the images (Ubuntu 24.04's FFmpeg 6 and glibc 2.39 do not).
host_matches_runtime() {
  [ -r /etc/os-release ] && (. /etc/os-release && [ "${ID:-}" = debian ] && [ "${VERSION_ID:-}" = 12 ])
}

# Debian/Ubuntu packages, in the order a newcomer needs them: the services
# (build and run), then the desktop app, then the tests.
SERVICE_PACKAGES=(
  build-essential pkg-config clang libclang-dev mold
  libavcodec-dev libavformat-dev libavutil-dev libavfilter-dev libavdevice-dev
  libswresample-dev libswscale-dev ffmpeg
  python3 python3-venv python3-pip rabbitmq-server curl openssl
)
# The desktop app (Tauri v2 on WebKitGTK) and its icons.
DESKTOP_PACKAGES=(
  libwebkit2gtk-4.1-dev libgtk-3-dev libayatana-appindicator3-dev librsvg2-dev
  libsoup-3.0-dev librsvg2-bin
  # Names with an emoji show it, not an empty box (the .deb depends on it).
  fonts-noto-color-emoji
)
TEST_PACKAGES=(
  shellcheck
  # The GUI tests: a virtual display, WebDriver, a notification daemon, a
  # tray host, X input and screenshots, and a GTK drag source.
  xvfb webkit2gtk-driver dunst dbus dbus-x11 xdotool trayer imagemagick
  python3-gi gir1.2-gtk-3.0
  # The desktop keyring test: a Secret Service and its command-line client.
  gnome-keyring libsecret-tools
)

# One build for scripts/up and scripts/test: the dev profile (the converter
# and its FFmpeg bindings optimised, see Cargo.toml) with the features that
# `cargo test --workspace` resolves, so the test run reuses what up built.
# Binaries land in $CARGO_TARGET_DIR/debug.
# shellcheck disable=SC2034 # used by the scripts that source this file
BIN="$CARGO_TARGET_DIR/debug"
# shellcheck disable=SC2034
SERVICE_BINS=(--bin gateway --bin auth-service --bin converter --bin notification)
build_workspace_bins() { # cargo build of these --bin flags, as the tests see them
  (cd "$ROOT" && cargo build --workspace "$@")
}

# mold links several times faster than GNU ld (the test build links dozens
# of binaries); used when installed, which the package lists make sure of.
use_mold() {
  if command -v mold >/dev/null && [[ "${RUSTFLAGS:-}" != *fuse-ld* ]]; then
    export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C link-arg=-fuse-ld=mold"
  fi
}
use_mold

# Installs whichever of these Debian packages are missing.
install_missing_packages() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# Every package (scripts/test), or the groups named: service desktop test.
ensure_system_packages() {
  local groups=("$@") packages=()
  [ ${#groups[@]} -gt 0 ] || groups=(service desktop test)
  local group
  for group in "${groups[@]}"; do
    case "$group" in
      service) packages+=("${SERVICE_PACKAGES[@]}");;
      desktop) packages+=("${DESKTOP_PACKAGES[@]}");;
      test) packages+=("${TEST_PACKAGES[@]}");;
    esac
  done
  install_missing_packages "${packages[@]}"
  use_mold  # it may have just arrived
  command -v cargo >/dev/null || { echo "error: cargo not found; install Rust with rustup" >&2; return 1; }
}

# A Python venv with SecantusDB (a MongoDB-wire-compatible server, for
# machines without mongod), aiosmtpd (the local SMTP catcher), PyYAML (the
# container runner reads the rendered manifests) and pika (scripts/audit
# reads queue depths).
ensure_venv() {
  if [ ! -x "$VENV/bin/secantusd-py" ] || [ ! -x "$VENV/bin/schemathesis" ] \
    || ! "$VENV/bin/python" -c 'import aiosmtpd, yaml, pika' 2>/dev/null; then
    log "creating the Python venv in $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q --pre secantusdb
    # schemathesis: scripts/fuzz-api, the gateway against its own OpenAPI document.
    "$VENV/bin/pip" install -q aiosmtpd pyyaml pika==1.3.2 schemathesis==4.32.5
  fi
}

# Fails, saying why, when RabbitMQ has raised a resource alarm (free disk
# under its limit, or memory over its watermark): it then blocks publishers.
check_broker_alarms() {
  command -v rabbitmq-diagnostics >/dev/null || return 0
  if ! as_root rabbitmq-diagnostics -q check_local_alarms >/dev/null 2>&1; then
    echo "error: RabbitMQ has a resource alarm and blocks publishing:" >&2
    as_root rabbitmq-diagnostics -q alarms >&2 || true
    df -h / >&2
    return 1
  fi
}

ensure_rabbitmq() {
  if ! port_open 5672; then
    log "starting RabbitMQ"
    as_root rabbitmq-server -detached >/dev/null 2>&1 || true
    as_root rabbitmqctl await_startup --timeout 60 >/dev/null
    wait_for_port 5672 60 RabbitMQ
  fi
  ensure_broker_admin
}

# A secret of the local stack under var/ (made once, readable by its owner
# only): NAME's file, printed.
local_secret() { # NAME
  local file="$VAR/secrets/$1"
  mkdir -p "$VAR/secrets" && chmod 700 "$VAR/secrets"
  [ -s "$file" ] || (umask 077 && openssl rand -hex 24 >"$file")
  cat "$file"
}

# The local broker's administrator for tests and tools (mp3c-admin, its
# password in var/secrets/), and `guest` limited to nothing: with
# guest/guest any local process could read every user's events and publish
# forged messages. Exports AMQP_URL for it unless one is set.
ensure_broker_admin() {
  local password users
  password=$(local_secret rabbitmq-admin)
  # Read whole first: with pipefail, `rabbitmqctl | grep -q` fails whenever
  # grep's early exit cuts rabbitmqctl off (SIGPIPE), found or not.
  users=$(as_root rabbitmqctl -q list_users 2>/dev/null || true)
  if grep -q '^mp3c-admin[[:space:]]' <<<"$users"; then
    as_root rabbitmqctl -q change_password mp3c-admin "$password" >/dev/null
  else
    as_root rabbitmqctl -q add_user mp3c-admin "$password" >/dev/null
  fi
  as_root rabbitmqctl -q set_user_tags mp3c-admin administrator >/dev/null
  as_root rabbitmqctl -q set_permissions -p / mp3c-admin '.*' '.*' '.*' >/dev/null
  if grep -q '^guest[[:space:]]' <<<"$users"; then
    as_root rabbitmqctl -q clear_permissions -p / guest >/dev/null 2>&1 || true
    as_root rabbitmqctl -q set_user_tags guest >/dev/null 2>&1 || true
  fi
  export AMQP_URL=${AMQP_URL:-"amqp://mp3c-admin:$password@127.0.0.1:5672/%2f"}
}

# The local MongoDB's URI with its root user's credentials (var/secrets/).
local_mongodb_uri() {
  printf 'mongodb://mp3c:%s@127.0.0.1:27017/?authSource=admin' "$(local_secret mongodb-root)"
}

# MODE is "persistent" (data under var/mongo) or "memory" (tests: a fresh
# var/mongo-test each start). Either way it requires a login, as a real
# mongod should: the root user mp3c, its password in var/secrets/, created
# on a side port without authentication the first time. Exports MONGODB_URI
# for it unless one is set.
ensure_mongodb() {
  local mode=$1
  if ! port_open 27017; then
    ensure_venv
    local storage="$VAR/mongo" extra=()
    if [ "$mode" = memory ]; then
      storage="$VAR/mongo-test"
      rm -rf "$storage"
      # Dropped test databases keep their space until the cache evicts: a
      # whole test run needs more than the 1G default.
      extra=(--cache-size 6G)
    fi
    mkdir -p "$storage" && chmod 700 "$storage"
    local server=("$VENV/bin/secantusd-py" --host 127.0.0.1 --storage-path "$storage" "${extra[@]}")
    local name="SecantusDB (MongoDB-compatible)"
    if command -v mongod >/dev/null; then
      server=(mongod --bind_ip 127.0.0.1 --dbpath "$storage")
      name=mongod
    fi
    if [ ! -e "$storage/.mp3c-root-user" ]; then
      log "creating the root user of the local MongoDB (password in var/secrets/mongodb-root)"
      # A free side port of its own: whatever else listens (a setup server
      # an interrupted run left) is never mistaken for it.
      local side=27018
      while port_open "$side"; do side=$((side + 1)); done
      (umask 077; exec "${server[@]}" --port "$side" >>"$VAR/log/mongodb.log" 2>&1) &
      local setup=$!
      wait_for_port "$side" 60 "MongoDB (setup)"
      MONGO_PORT=$side MONGO_PASSWORD=$(local_secret mongodb-root) "$VENV/bin/python" -c '
import os, pymongo
client = pymongo.MongoClient("127.0.0.1", int(os.environ["MONGO_PORT"]), directConnection=True)
password, roles = os.environ["MONGO_PASSWORD"], [{"role": "root", "db": "admin"}]
if client.admin.command("usersInfo", "mp3c")["users"]:
    client.admin.command("updateUser", "mp3c", pwd=password, roles=roles)
else:
    client.admin.command("createUser", "mp3c", pwd=password, roles=roles)'
      kill "$setup" && wait "$setup" 2>/dev/null || true
      touch "$storage/.mp3c-root-user"
    fi
    log "starting $name on 27017 (login required), storage ${storage#"$ROOT/"}"
    (umask 077
     nohup "${server[@]}" --port 27017 --auth >>"$VAR/log/mongodb.log" 2>&1 &
     echo $! >"$VAR/run/mongodb.pid")
    wait_for_port 27017 60 MongoDB
  fi
  export MONGODB_URI=${MONGODB_URI:-$(local_mongodb_uri)}
}

ensure_postgres() {
  port_open 5432 && return 0
  if command -v pg_ctlcluster >/dev/null; then
    log "starting PostgreSQL"
    as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
    wait_for_port 5432 30 PostgreSQL
  else
    echo "error: PostgreSQL is not running on 127.0.0.1:5432 (the auth tests need it)" >&2
    return 1
  fi
}

# MariaDB for the auth tests that run against MySQL/MariaDB: root without a
# password over TCP, as on the machines CI runs on.
ensure_mariadb() {
  port_open 3306 && return 0
  if ! command -v mariadbd >/dev/null && ! [ -x /usr/sbin/mariadbd ]; then
    log "installing MariaDB"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server >/dev/null
  fi
  log "starting MariaDB"
  as_root mkdir -p /run/mysqld
  as_root chown mysql:mysql /run/mysqld 2>/dev/null || true
  as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
  wait_for_port 3306 60 MariaDB
  # Fresh installs authenticate root by socket only; the tests connect over TCP.
  as_root mariadb -uroot -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket" 2>/dev/null || true
}

ensure_smtp_catcher() {
  port_open 1025 && return 0
  ensure_venv
  log "starting the SMTP catcher on 127.0.0.1:1025 (mail goes to var/mail/)"
  (umask 077
   nohup "$VENV/bin/python" "$ROOT/scripts/smtp-catcher.py" 127.0.0.1 1025 "$VAR/mail" \
     >>"$VAR/log/smtp-catcher.log" 2>&1 &
   echo $! >"$VAR/run/smtp-catcher.pid")
  wait_for_port 1025 20 "SMTP catcher"
}

running() { [ -f "$VAR/run/$1.pid" ] && kill -0 "$(cat "$VAR/run/$1.pid")" 2>/dev/null; }

# --- Containers (scripts/images, cluster-up, cluster-down) -----------------

# The container engine: docker when its daemon answers, else podman (Debian's,
# installed when missing) with the project's containers.conf.
# ENGINE=docker or ENGINE=podman picks one.
ensure_container_engine() {
  if [ "${ENGINE:-}" = docker ] || { [ -z "${ENGINE:-}" ] && command -v docker >/dev/null && docker info >/dev/null 2>&1; }; then
    ENGINE=docker
    return 0
  fi
  ENGINE=podman
  install_missing_packages podman runc debootstrap
  export CONTAINERS_CONF=${CONTAINERS_CONF:-$ROOT/scripts/containers.conf}
}

# debian:bookworm-slim, the base of every image: pulled where a registry
# answers, else made from Debian's packages with debootstrap (about a
# minute) and trimmed the way the official slim image is.
DEBIAN_SLIM=docker.io/library/debian:bookworm-slim
ensure_debian_base_image() {
  "$ENGINE" image inspect "$DEBIAN_SLIM" >/dev/null 2>&1 && return 0
  if timeout 60 "$ENGINE" pull -q "$DEBIAN_SLIM" >/dev/null 2>&1; then
    return 0
  fi
  grep -q '^12' /etc/debian_version 2>/dev/null || {
    echo "error: $DEBIAN_SLIM cannot be pulled, and only a Debian 12 host can make it" >&2
    return 1
  }
  log "no registry answers: making $DEBIAN_SLIM from Debian's packages (debootstrap)"
  local rootfs mirror
  rootfs=$(mktemp -d "${TMPDIR:-/tmp}/debian-base.XXXXXX")
  # The mirror this machine's apt already uses.
  mirror=$(grep -rhoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
    | awk '{print $2}' | head -n 1 || true)
  as_root debootstrap --variant=minbase bookworm "$rootfs" "${mirror:-http://deb.debian.org/debian}" \
    >"$VAR/log/debootstrap.log" 2>&1 || {
    echo "error: debootstrap failed; see $VAR/log/debootstrap.log" >&2
    as_root rm -rf "$rootfs"
    return 1
  }
  # As the official image: the host's apt sources (updates and security
  # too), no docs, man pages or translations from later installs, apt's
  # downloads removed after each install, no service started by a package.
  as_root rm -f "$rootfs/etc/apt/sources.list"
  as_root cp -a /etc/apt/sources.list.d/. "$rootfs/etc/apt/sources.list.d/"
  [ ! -s /etc/apt/sources.list ] || as_root cp /etc/apt/sources.list "$rootfs/etc/apt/sources.list"
  as_root tee "$rootfs/etc/dpkg/dpkg.cfg.d/docker" >/dev/null <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
CFG
  as_root tee "$rootfs/etc/apt/apt.conf.d/docker-clean" >/dev/null <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG
  printf '#!/bin/sh\nexit 101\n' | as_root tee "$rootfs/usr/sbin/policy-rc.d" >/dev/null
  as_root chmod 755 "$rootfs/usr/sbin/policy-rc.d"
  as_root find "$rootfs/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
  as_root find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  as_root rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/log/*.log
  as_root tar -C "$rootfs" -c . | "$ENGINE" import --change 'CMD ["bash"]' - "$DEBIAN_SLIM" >/dev/null
  as_root rm -rf "$rootfs"
  log "made $DEBIAN_SLIM ($(image_size "$DEBIAN_SLIM"))"
}

# An image's size, in MB.
image_size() {
  "$ENGINE" image inspect --format '{{.Size}}' "$1" | awk '{printf "%.1f MB", $1 / 1000000}'
}
