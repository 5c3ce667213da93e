#!/usr/bin/env bash
# Real shared services for the `shared` profile on one machine: redis-server and PostgreSQL on loopback.
#
#   scripts/services.sh start    install (apt-get, if missing) and start both; prints `export ...` lines
#   scripts/services.sh stop     clean shutdown of both
#   scripts/services.sh status   exit 0 when both answer
#   scripts/services.sh env      print the `export ...` lines (eval "$(scripts/services.sh env)")
#
# Idempotent: `start` twice is fine (a server that already answers is kept), stale pid/lock files left by a
# killed run are removed before starting. Every wait is bounded. State lives in $TRADECAST_SERVICES_DIR
# (default /tmp/tradecast-services): redis/ (AOF, so pushed features survive a Redis restart too) and pg/.
# Ports: $TRADECAST_REDIS_PORT (6390) and $TRADECAST_PG_PORT (5440), away from the system defaults; `start`
# records them in $TRADECAST_SERVICES_DIR/ports.env so `stop`/`status` on that dir need no variables.
# .ci/run uses its own dir and free ports per run, so concurrent CI runs never stop each other's servers.
# PostgreSQL: trust on its own unix socket (for setup), password (scram) on 127.0.0.1; role/password/db
# `tradecast` (CREATEDB, so tests make throwaway databases) and a database `mlflow` for the MLflow backend.
set -euo pipefail

SERVICES_DIR="${TRADECAST_SERVICES_DIR:-/tmp/tradecast-services}"
# ports a `start` recorded for this data dir (so `stop`/`status` find them without the variables)
if [ -f "$SERVICES_DIR/ports.env" ]; then
  : "${TRADECAST_REDIS_PORT:=$(sed -n 's/^REDIS_PORT=//p' "$SERVICES_DIR/ports.env")}"
  : "${TRADECAST_PG_PORT:=$(sed -n 's/^PG_PORT=//p' "$SERVICES_DIR/ports.env")}"
fi
REDIS_PORT="${TRADECAST_REDIS_PORT:-6390}"
PG_PORT="${TRADECAST_PG_PORT:-5440}"
PG_USER="tradecast"
PG_PASSWORD="${TRADECAST_PG_PASSWORD:-tradecast}"
REDIS_DIR="$SERVICES_DIR/redis"
PG_DIR="$SERVICES_DIR/pg"
PG_DATA="$PG_DIR/data"
PG_SOCK="$PG_DIR/sock"
WAIT_SECONDS="${TRADECAST_SERVICES_WAIT:-30}"

say() { echo "services: $*" >&2; }
die() { echo "services: error: $*" >&2; exit 1; }

pg_bindir() {
  local d
  if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/pg_ctl" ]; then pg_config --bindir; return; fi
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$d/pg_ctl" ] && { echo "$d"; return; }
  done
  command -v pg_ctl >/dev/null 2>&1 && { dirname "$(readlink -f "$(command -v pg_ctl)")"; return; }
  return 1
}

install_missing() {
  local need=0
  command -v redis-server >/dev/null 2>&1 || need=1
  pg_bindir >/dev/null 2>&1 || need=1
  [ "$need" = 0 ] && return
  command -v apt-get >/dev/null 2>&1 || die "redis-server/postgresql missing and no apt-get: install them with your package manager"
  [ "$(id -u)" = 0 ] || die "redis-server/postgresql missing: run as root (or: sudo apt-get install -y redis-server postgresql)"
  say "installing redis-server and postgresql from Debian packages"
  # no service autostart inside containers/CI: we start our own instances below
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server postgresql >/dev/null
  command -v redis-server >/dev/null 2>&1 || die "redis-server still missing after apt-get install"
  pg_bindir >/dev/null 2>&1 || die "PostgreSQL binaries still missing after apt-get install"
}

# PostgreSQL refuses to run as root: run its tools as the `postgres` system user then.
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' user (install postgresql)"
    if command -v runuser >/dev/null 2>&1; then runuser -u postgres -- "$@"; else su postgres -s /bin/sh -c "$(printf '%q ' "$@")"; fi
  else
    "$@"
  fi
}

# A killed server can linger as a zombie (no reaper in a container): kill -0 succeeds on it, so check the state.
pid_alive() {
  [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null || return 1
  [ -r "/proc/$1/stat" ] || return 0
  [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

redis_up() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }

start_redis() {
  mkdir -p "$REDIS_DIR"
  if redis_up; then say "redis already up on 127.0.0.1:$REDIS_PORT"; return; fi
  local pidfile="$REDIS_DIR/redis.pid"
  if [ -f "$pidfile" ] && ! pid_alive "$(cat "$pidfile")"; then say "removing stale $pidfile"; rm -f "$pidfile"; fi
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --protected-mode yes --daemonize yes \
    --dir "$REDIS_DIR" --pidfile "$pidfile" --logfile "$REDIS_DIR/redis.log" \
    --appendonly yes --appendfsync everysec --save "" >/dev/null
  local i
  for ((i = 0; i < WAIT_SECONDS * 5; i++)); do redis_up && { say "redis up on 127.0.0.1:$REDIS_PORT"; return; }; sleep 0.2; done
  tail -n 20 "$REDIS_DIR/redis.log" >&2 || true
  die "redis did not answer within ${WAIT_SECONDS}s"
}

stop_redis() {
  local pidfile="$REDIS_DIR/redis.pid" pid="" i
  [ -f "$pidfile" ] && pid="$(cat "$pidfile")"
  if redis_up; then
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown >/dev/null 2>&1 || true
    for ((i = 0; i < WAIT_SECONDS * 5; i++)); do redis_up || break; sleep 0.2; done
    redis_up && die "redis still answering after ${WAIT_SECONDS}s"
  fi
  if pid_alive "$pid"; then
    for ((i = 0; i < WAIT_SECONDS * 5; i++)); do pid_alive "$pid" || break; sleep 0.2; done
    pid_alive "$pid" && die "redis pid $pid still running after ${WAIT_SECONDS}s"
  fi
  rm -f "$pidfile"
  say "redis stopped"
}

pg_up() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 2 >/dev/null 2>&1; }

psql_admin() { as_pg "$PG_BIN/psql" -v ON_ERROR_STOP=1 -qtA -h "$PG_SOCK" -p "$PG_PORT" -U postgres -d postgres "$@"; }

clear_stale_pg() {
  # postmaster.pid of a killed server: remove it only when its pid is gone (postgres itself refuses a pid reused
  # by another process); socket lock files likewise.
  local pidfile="$PG_DATA/postmaster.pid" pid
  if [ -f "$pidfile" ]; then
    pid="$(head -n 1 "$pidfile")"
    if ! pid_alive "$pid"; then say "removing stale $pidfile"; rm -f "$pidfile"; fi
  fi
  if [ -f "$PG_SOCK/.s.PGSQL.$PG_PORT.lock" ]; then
    pid="$(head -n 1 "$PG_SOCK/.s.PGSQL.$PG_PORT.lock")"
    pid_alive "$pid" || rm -f "$PG_SOCK/.s.PGSQL.$PG_PORT.lock" "$PG_SOCK/.s.PGSQL.$PG_PORT"
  fi
}

start_pg() {
  mkdir -p "$PG_DIR" "$PG_SOCK"
  [ "$(id -u)" = 0 ] && chown -R postgres "$PG_DIR"
  if pg_up; then say "postgresql already up on 127.0.0.1:$PG_PORT"; else
    if [ ! -f "$PG_DATA/PG_VERSION" ]; then
      rm -rf "$PG_DATA"
      local pwfile="$PG_DIR/.pw"
      (umask 077; echo "$PG_PASSWORD" >"$pwfile")
      [ "$(id -u)" = 0 ] && chown postgres "$pwfile"
      as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --pwfile="$pwfile" --auth-local=trust \
        --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$PG_DIR/initdb.log" 2>&1 \
        || { rm -f "$pwfile"; tail -n 20 "$PG_DIR/initdb.log" >&2; die "initdb failed"; }
      rm -f "$pwfile"
    fi
    clear_stale_pg
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_DIR/postgres.log" -w -t "$WAIT_SECONDS" \
      -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_SOCK -c fsync=off -c max_connections=200" start >/dev/null \
      || { tail -n 20 "$PG_DIR/postgres.log" >&2; die "postgresql did not start within ${WAIT_SECONDS}s"; }
    local i
    for ((i = 0; i < WAIT_SECONDS * 5; i++)); do pg_up && break; sleep 0.2; done
    pg_up || die "postgresql did not accept connections within ${WAIT_SECONDS}s"
    say "postgresql up on 127.0.0.1:$PG_PORT"
  fi
  # role and databases (idempotent)
  if [ "$(psql_admin -c "select 1 from pg_roles where rolname='$PG_USER'")" != 1 ]; then
    psql_admin -c "create role $PG_USER login createdb password '$PG_PASSWORD'"
  fi
  local db
  for db in tradecast mlflow; do
    if [ "$(psql_admin -c "select 1 from pg_database where datname='$db'")" != 1 ]; then
      psql_admin -c "create database $db owner $PG_USER"
    fi
  done
}

stop_pg() {
  if [ -f "$PG_DATA/PG_VERSION" ] && as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t "$WAIT_SECONDS" stop >/dev/null \
      || die "postgresql did not stop within ${WAIT_SECONDS}s"
  elif pg_up; then
    say "warning: a postgresql on port $PG_PORT is not ours ($PG_DATA); left running"
  fi
  [ -d "$PG_DATA" ] && clear_stale_pg
  say "postgresql stopped"
}

print_env() {
  cat <<EOF
export TRADECAST_SERVICES_DIR='$SERVICES_DIR'
export REDIS_URL='redis://127.0.0.1:$REDIS_PORT/0'
export TRADECAST_PG_DSN='postgresql://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/tradecast'
EOF
}

cmd="${1:-}"
case "$cmd" in
  start)
    install_missing
    PG_BIN="$(pg_bindir)" || die "PostgreSQL binaries not found"
    mkdir -p "$SERVICES_DIR"
    printf 'REDIS_PORT=%s\nPG_PORT=%s\n' "$REDIS_PORT" "$PG_PORT" >"$SERVICES_DIR/ports.env"
    start_redis
    start_pg
    print_env
    ;;
  stop)
    command -v redis-cli >/dev/null 2>&1 && stop_redis
    if PG_BIN="$(pg_bindir 2>/dev/null)"; then stop_pg; fi
    ;;
  status)
    PG_BIN="$(pg_bindir)" || die "PostgreSQL binaries not found"
    ok=0
    redis_up && say "redis up on 127.0.0.1:$REDIS_PORT" || { say "redis down"; ok=1; }
    pg_up && say "postgresql up on 127.0.0.1:$PG_PORT" || { say "postgresql down"; ok=1; }
    exit "$ok"
    ;;
  env) print_env ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
