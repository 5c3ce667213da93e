#!/usr/bin/env bash
# Runs a command (the test suite, from `make test`) with real redis-server and PostgreSQL run on
# loopback for the shared-profile tests (tests/test_scaleout_*.py): scripts/services.sh installs them from
# Debian's packages when missing, starts them (bounded waits) and exports REDIS_URL / TRADECAST_PG_DSN, so those
# tests run instead of skipping. Each run gets its own data dir and free ports, so runs on one machine (one after
# the other, or at the same time) never stop each other's servers; a killed run's leftovers are stopped here.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || { echo "usage: scripts/with_services.sh COMMAND..." >&2; exit 2; }

for old in /tmp/tradecast-ci-*; do  # servers of earlier runs whose process is gone
  [ -d "$old" ] || continue
  if ! kill -0 "${old##*-}" 2>/dev/null; then
    TRADECAST_SERVICES_DIR="$old" scripts/services.sh stop || true
    rm -rf "$old"
  fi
done

free_port() {  # a random high port nobody listens on
  local port i
  for i in $(seq 1 50); do
    port=$((20000 + RANDOM % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
  echo "no free port found" >&2; return 1
}
export TRADECAST_SERVICES_DIR="/tmp/tradecast-ci-$$"
export TRADECAST_REDIS_PORT="$(free_port)"
export TRADECAST_PG_PORT="$(free_port)"
trap 'scripts/services.sh stop || true; rm -rf "$TRADECAST_SERVICES_DIR"' EXIT
services_env="$(scripts/services.sh start)"  # a failed start stops CI here (set -e)
eval "$services_env"
"$@"
