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

# Debian/Ubuntu packages the build, the services and the tests need.
SYSTEM_PACKAGES=(
  build-essential pkg-config clang libclang-dev
  libavcodec-dev libavformat-dev libavutil-dev libavfilter-dev libavdevice-dev
  libswresample-dev libswscale-dev ffmpeg
  python3 python3-venv python3-pip rabbitmq-server curl shellcheck
  # The desktop app (Tauri v2 on WebKitGTK) and its icons.
  libwebkit2gtk-4.1-dev libgtk-3-dev libayatana-appindicator3-dev librsvg2-dev
  libsoup-3.0-dev librsvg2-bin
  # Its GUI tests: a virtual display, WebDriver, a notification daemon, a
  # tray host, X input and screenshots, and a GTK drag source.
  xvfb webkit2gtk-driver dunst dbus dbus-x11 xdotool trayer imagemagick
  python3-gi gir1.2-gtk-3.0
  # The desktop keyring test: a Secret Service and its command-line client.
  gnome-keyring libsecret-tools
)

ensure_system_packages() {
  local missing=() pkg
  for pkg in "${SYSTEM_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  command -v cargo >/dev/null || { echo "error: cargo not found; install Rust with rustup" >&2; return 1; }
}

# A Python venv with SecantusDB (a MongoDB-wire-compatible server, for
# machines without mongod) and aiosmtpd (the local SMTP catcher).
ensure_venv() {
  if [ ! -x "$VENV/bin/secantusd-py" ] || ! "$VENV/bin/python" -c 'import aiosmtpd' 2>/dev/null; then
    log "creating the Python venv in $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q --pre secantusdb aiosmtpd
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
  port_open 5672 && return 0
  log "starting RabbitMQ"
  as_root rabbitmq-server -detached >/dev/null 2>&1 || true
  as_root rabbitmqctl await_startup --timeout 60 >/dev/null
  wait_for_port 5672 60 RabbitMQ
}

# MODE is "persistent" (data under var/mongo) or "memory" (tests).
ensure_mongodb() {
  local mode=$1
  port_open 27017 && return 0
  if command -v mongod >/dev/null; then
    log "starting mongod"
    mkdir -p "$VAR/mongo"
    nohup mongod --bind_ip 127.0.0.1 --port 27017 --dbpath "$VAR/mongo" >>"$VAR/log/mongodb.log" 2>&1 &
  else
    ensure_venv
    local storage="$VAR/mongo"
    [ "$mode" = memory ] && storage=":memory:"
    log "starting SecantusDB (MongoDB-compatible) on 27017, storage $storage"
    mkdir -p "$VAR/mongo"
    nohup "$VENV/bin/secantusd-py" --host 127.0.0.1 --port 27017 --storage-path "$storage" \
      >>"$VAR/log/mongodb.log" 2>&1 &
  fi
  echo $! >"$VAR/run/mongodb.pid"
  wait_for_port 27017 60 MongoDB
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
  nohup "$VENV/bin/python" "$ROOT/scripts/smtp-catcher.py" 127.0.0.1 1025 "$VAR/mail" \
    >>"$VAR/log/smtp-catcher.log" 2>&1 &
  echo $! >"$VAR/run/smtp-catcher.pid"
  wait_for_port 1025 20 "SMTP catcher"
}

running() { [ -f "$VAR/run/$1.pid" ] && kill -0 "$(cat "$VAR/run/$1.pid")" 2>/dev/null; }
