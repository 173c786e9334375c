#!/usr/bin/env bash
# The batch store of batch models (serving.mode batch, e.g. user_value) on this machine: Debian's redis-server at
# KEIKO_BATCH_STORE_URL's port (default 6390), its data in $KEIKO_HOME/batch-store (snapshotted on shutdown, loaded
# at start). `up` starts it unless it answers already; `down` stops it. Production uses DynamoDB instead.
set -euo pipefail
cd "$(dirname "$0")/.."
export KEIKO_HOME="${KEIKO_HOME:-$PWD/.keiko}"
url="${KEIKO_BATCH_STORE_URL:-redis://127.0.0.1:6390/0}"
[[ "$url" =~ ^redis://(127\.0\.0\.1|localhost):([0-9]+)(/[0-9]+)?$ ]] \
  || { echo "batch_store.sh runs a local Redis; KEIKO_BATCH_STORE_URL=$url is not redis://127.0.0.1:<port>[/db]" >&2; exit 2; }
port="${BASH_REMATCH[2]}"
dir="$KEIKO_HOME/batch-store"
ping() { [[ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" == PONG ]]; }
case "${1:-up}" in
  up)
    command -v redis-server >/dev/null || { echo "no redis-server: 'make stack-packages' installs it" >&2; exit 1; }
    if ping; then echo "batch store: $url (already up)"; exit 0; fi
    mkdir -p "$dir"
    redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --save "300 1" --appendonly no --daemonize yes \
      --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
    for _ in $(seq 50); do ping && break; sleep 0.1; done
    ping || { cat "$dir/redis.log" >&2; exit 1; }
    echo "batch store: $url (redis-server, data in $dir)"
    ;;
  down)
    if ping; then redis-cli -h 127.0.0.1 -p "$port" shutdown save >/dev/null 2>&1 || true; fi
    echo "batch store stopped (data kept in $dir)"
    ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
