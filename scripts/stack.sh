#!/usr/bin/env bash
# scripts/stack.sh up|down|status|env (`make stack`, `make stack-down`): the production shape of Airflow on this
# machine, without Docker. PostgreSQL and Redis as this user's own instances, Airflow's api-server, scheduler,
# dag-processor, triggerer and one Celery worker as separate processes, and `keiko serve` for every model.
# Everything lives under $KEIKO_HOME/stack/: data, logs/<component>.log, pids/<component>.pid, and stack.env (the
# components' settings, for a shell or scripts/backfill.sh to source). `env` prints those settings and starts
# nothing.
#
# The settings docker-compose.yaml has too come from deploy/airflow.env; what differs is set in stack_env below.
# A variable already set in the caller's environment wins over deploy/airflow.env, as a compose service's
# `environment:` wins over its `env_file:` (`up` names each one that differs). Ports (defaults):
# STACK_POSTGRES_PORT (5433), STACK_REDIS_PORT (6380), STACK_API_PORT (8080), STACK_SCHEDULER_HEALTH_PORT (8974),
# STACK_WORKER_LOG_PORT (8793), STACK_TRIGGERER_LOG_PORT (8794), STACK_SERVE_PORT_<MODEL> (model.yaml's
# serving.port) and STACK_SERVE_REPLICAS[_<MODEL>] (model.yaml's serving.replicas). Login:
# _AIRFLOW_WWW_USER_USERNAME / _AIRFLOW_WWW_USER_PASSWORD (airflow / airflow), as in docker-compose.yaml.
# STACK_TIMEOUT: how long `up` waits for the components to be healthy (300 s).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/.venv/bin"
SHARED="$ROOT/deploy/airflow.env"
export PATH="$BIN:$PATH"  # the components start `airflow ...` and `keiko ...` children
export KEIKO_HOME="${KEIKO_HOME:-$ROOT/.keiko}"
KEIKO_HOME="$(realpath -m "$KEIKO_HOME")"
STACK="$KEIKO_HOME/stack"
LOGS="$STACK/logs" PIDS="$STACK/pids" PGDATA="$STACK/postgres"
AIRFLOW_COMPONENTS=(api-server scheduler dag-processor triggerer worker)

say() { printf 'stack: %s\n' "$*"; }
die() { printf 'stack: %s\n' "$*" >&2; exit 1; }
# After something started: what stops it again.
fail() { die "$* ('scripts/stack.sh down' or 'make stack-down' stops what did start)"; }

# --- the environment of every component ---------------------------------------------------------------------

# deploy/airflow.env, read as data rather than sourced: Compose reads the same lines without a shell.
load_shared() {
  local line name value
  OVERRIDDEN=()
  while IFS= read -r line || [[ -n "$line" ]]; do
    [[ -z "$line" || "$line" == \#* ]] && continue
    [[ "$line" =~ ^([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] || die "$SHARED: not NAME=value: $line"
    name="${BASH_REMATCH[1]}" value="${BASH_REMATCH[2]}"
    if [[ -n "${!name+set}" ]]; then
      [[ "${!name,,}" == "${value,,}" ]] || OVERRIDDEN+=("$name=${!name} (deploy/airflow.env: $value)")
    else
      export "$name=$value"
    fi
  done <"$SHARED"
}

# "model port replicas", a line per model: model.yaml's serving.port and serving.replicas unless
# STACK_SERVE_PORT_<MODEL>, STACK_SERVE_REPLICAS_<MODEL> or STACK_SERVE_REPLICAS say otherwise.
models() {
  "$BIN/python" - <<'PY'
import os
from keiko.modeldef import load_model, model_names

for name in model_names():
    serving, key = load_model(name).config.serving, name.upper()
    port = os.environ.get(f"STACK_SERVE_PORT_{key}") or serving.port
    replicas = os.environ.get(f"STACK_SERVE_REPLICAS_{key}") or os.environ.get("STACK_SERVE_REPLICAS") or serving.replicas
    print(name, port, replicas)
PY
}

stack_env() {
  PG_PORT="${STACK_POSTGRES_PORT:-5433}"
  REDIS_PORT="${STACK_REDIS_PORT:-6380}"
  API_PORT="${STACK_API_PORT:-8080}"
  SCHEDULER_HEALTH_PORT="${STACK_SCHEDULER_HEALTH_PORT:-8974}"
  local pg="airflow:airflow@127.0.0.1:$PG_PORT"  # user and password as docker-compose's
  load_shared
  # What differs from docker-compose.yaml: loopback addresses and this stack's ports instead of service names,
  # paths under $KEIKO_HOME/stack and the checkout instead of the image's.
  export AIRFLOW_HOME="$STACK/airflow"
  export AIRFLOW_CONFIG="$AIRFLOW_HOME/airflow.cfg"  # one airflow.cfg (one JWT secret) for every component
  export AIRFLOW__CORE__DAGS_FOLDER="${AIRFLOW__CORE__DAGS_FOLDER:-$ROOT/dags}"
  export AIRFLOW__CORE__PLUGINS_FOLDER="${AIRFLOW__CORE__PLUGINS_FOLDER:-$ROOT/plugins}"
  export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="postgresql+psycopg2://$pg/airflow"
  export AIRFLOW__CELERY__RESULT_BACKEND="db+postgresql://$pg/airflow"
  export AIRFLOW__CELERY__BROKER_URL="redis://:@127.0.0.1:$REDIS_PORT/0"  # no password, as compose's
  # Batch models' scores in the same Redis, database 1 (Celery has 0), as compose does.
  export KEIKO_BATCH_STORE_URL="${KEIKO_BATCH_STORE_URL:-redis://127.0.0.1:$REDIS_PORT/1}"
  # Loopback only: the login is a fixed local one.
  export AIRFLOW__API__HOST=127.0.0.1 AIRFLOW__API__PORT="$API_PORT"
  export AIRFLOW__API__BASE_URL="${AIRFLOW__API__BASE_URL:-http://127.0.0.1:$API_PORT}"
  export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://127.0.0.1:$API_PORT/execution/"
  export AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST=127.0.0.1
  export AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT="$SCHEDULER_HEALTH_PORT"
  # The worker's and the triggerer's log servers, on ports of their own: `make airflow` uses the defaults.
  export AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT="${STACK_WORKER_LOG_PORT:-8793}"
  export AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT="${STACK_TRIGGERER_LOG_PORT:-8794}"
  export _AIRFLOW_WWW_USER_USERNAME="${_AIRFLOW_WWW_USER_USERNAME:-airflow}"
  : "${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS:=$_AIRFLOW_WWW_USER_USERNAME:admin}"
  : "${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:=$AIRFLOW_HOME/simple_auth_manager_passwords.json}"
  export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE
  # keiko: the registry in its own database on the same PostgreSQL server, as in docker-compose.yaml; artifacts
  # and the warehouse stay on local files under $KEIKO_HOME (keiko's defaults: there is no MinIO here).
  export KEIKO_REGISTRY_URL="postgresql+psycopg2://$pg/keiko"
  SERVERS=()
  local listing model port replicas urls i
  listing="$(models)" || die "could not read the models' serving ports (include/models/*/model.yaml)"
  while read -r model port replicas; do
    urls=""
    for ((i = 0; i < replicas; i++)); do urls+="${urls:+,}http://127.0.0.1:$((port + i))"; done
    export "KEIKO_SERVING_URLS_${model^^}=$urls"
    export "STACK_SERVE_PORT_${model^^}=$port" "STACK_SERVE_REPLICAS_${model^^}=$replicas"
    SERVERS+=("$model $port $replicas")
  done <<<"$listing"
  # The ports as resolved: stack.env then lets `status` and `down` find this stack again.
  export STACK_POSTGRES_PORT="$PG_PORT" STACK_REDIS_PORT="$REDIS_PORT" STACK_API_PORT="$API_PORT"
  export STACK_SCHEDULER_HEALTH_PORT="$SCHEDULER_HEALTH_PORT"
}

# The components' settings as `export` lines (what stack.env holds).
print_env() {
  local name
  for name in $(compgen -e | grep -E '^(AIRFLOW|KEIKO|STACK)_' | sort); do
    printf 'export %s=%q\n' "$name" "${!name}"
  done
}

# --- processes ----------------------------------------------------------------------------------------------

# A pid file holds "pid start-time", so that a pid the kernel has since given to another process is not taken
# for ours. The start time is field 22 of /proc/<pid>/stat, counted after the command name, which may hold
# spaces (Airflow retitles its processes: "(airflow api_ser)").
start_time() { [[ -r "/proc/$1/stat" ]] && sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $20}'; }

# The pid of a running component, or nothing.
pid_of() {
  local file="$PIDS/$1.pid" pid started
  [[ -s "$file" ]] || return 0
  read -r pid started <"$file"
  [[ -n "$pid" && "$(start_time "$pid")" == "$started" ]] && echo "$pid"
  return 0
}

# start NAME COMMAND...: in a session of its own, which a terminal's hangup does not reach; output to its log.
start() {
  local name="$1" pid
  shift
  pid="$(pid_of "$name")"
  if [[ -n "$pid" ]]; then
    say "$name already running (pid $pid)"
    return
  fi
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid $(start_time "$pid")" >"$PIDS/$name.pid"
}

# Every process below PID, children in sessions of their own included (a task's `keiko stage`).
descendants() {
  ps -e -o pid= -o ppid= | awk -v root="$1" '
    { parent[$1] = $2 }
    END {
      found[root] = 1
      do { more = 0; for (p in parent) if (!(p in found) && (parent[p] in found)) { found[p] = 1; more = 1 } } while (more)
      for (p in found) print p
    }'
}

# Which of the pids given are still running, comma-separated (empty when none is).
running() { ps -o pid= -p "$(IFS=,; echo "$*")" 2>/dev/null | tr -s ' \n' ',' | sed 's/^,//; s/,$//'; }

# stop NAME [GRACE]: SIGTERM to the component's process, which stops its children as it shuts down (the
# worker's warm shutdown lets a running task end first); after GRACE seconds, SIGKILL to whatever is left of its
# process tree as it was when asked to stop.
stop() {
  local name="$1" grace="${2:-30}" pid tree left deadline
  pid="$(pid_of "$name")"
  if [[ -z "$pid" ]]; then
    rm -f "$PIDS/$name.pid"
    return
  fi
  mapfile -t tree < <(descendants "$pid")
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + grace))
  while left="$(running "${tree[@]}")" && [[ -n "$left" ]] && (( SECONDS < deadline )); do sleep 0.2; done
  if [[ -n "$left" ]]; then
    say "$name: killing what did not stop within ${grace}s (pids $left)"
    kill -KILL ${left//,/ } 2>/dev/null || true
  fi
  rm -f "$PIDS/$name.pid"
  say "$name stopped"
}

# --- PostgreSQL and Redis ------------------------------------------------------------------------------------

pg_bin() {
  local dir
  if [[ -n "${STACK_PG_BIN:-}" ]]; then echo "$STACK_PG_BIN"; return; fi
  # Debian keeps the server's programs out of PATH, in /usr/lib/postgresql/<version>/bin.
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  [[ -n "$dir" ]] || dir="$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/initdb)")"
  [[ -x "$dir/initdb" ]] || die "no PostgreSQL server programs (initdb): 'make stack' installs them (apt-get install postgresql)"
  echo "$dir"
}

# PostgreSQL refuses to run as root: as root, its programs run as Debian's `postgres` user, on a data folder it owns.
as_pg() {
  if (( EUID == 0 )); then runuser -u postgres -- "$@"; else "$@"; fi
}

psql_do() { PGPASSWORD=airflow "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U airflow -d postgres -X "$@"; }

postgres_up() {
  PG_BIN="$(pg_bin)"
  mkdir -p "$PGDATA"
  touch "$LOGS/postgres.log"
  if (( EUID == 0 )); then
    chown postgres: "$PGDATA" "$LOGS/postgres.log"
    as_pg test -w "$PGDATA" || die "as root, PostgreSQL runs as user postgres, which cannot reach $PGDATA" \
      "(a parent folder is closed to it, e.g. mode 0700): use a KEIKO_HOME it can reach"
  fi
  chmod 700 "$PGDATA"
  if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
    local pwfile="$STACK/.postgres-password"  # not in the data folder: initdb wants it empty
    (umask 077 && echo airflow >"$pwfile")
    if (( EUID == 0 )); then chown postgres: "$pwfile"; fi
    as_pg "$PG_BIN/initdb" -D "$PGDATA" -U airflow --pwfile="$pwfile" --auth=scram-sha-256 -E UTF8 --no-locale \
      >>"$LOGS/postgres.log" 2>&1 || { rm -f "$pwfile"; die "initdb failed: $LOGS/postgres.log"; }
    rm -f "$pwfile"
  fi
  if as_pg "$PG_BIN/pg_ctl" status -D "$PGDATA" >/dev/null 2>&1; then
    say "postgres already running"
  else
    # TCP on loopback only, no Unix socket: its default folder, /var/run/postgresql, is outside KEIKO_HOME.
    as_pg "$PG_BIN/pg_ctl" start -D "$PGDATA" -l "$LOGS/postgres.log" -w -t 60 -s \
      -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=''" \
      || die "postgres did not start: $LOGS/postgres.log"
  fi
  local db
  for db in airflow keiko; do  # the Airflow metadata DB and keiko's registry; CREATE DATABASE has no IF NOT EXISTS
    if [[ -z "$(psql_do -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]]; then
      psql_do -qc "CREATE DATABASE $db" >/dev/null
    fi
  done
}

postgres_down() {
  [[ -s "$PGDATA/PG_VERSION" ]] || return 0
  PG_BIN="$(pg_bin)"
  if as_pg "$PG_BIN/pg_ctl" status -D "$PGDATA" >/dev/null 2>&1; then
    as_pg "$PG_BIN/pg_ctl" stop -D "$PGDATA" -m fast -w -s && say "postgres stopped"
  fi
}

redis_up() {
  command -v redis-server >/dev/null || die "no redis-server: 'make stack' installs it (apt-get install redis-server)"
  mkdir -p "$STACK/redis"
  start redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$STACK/redis" --daemonize no
}

# --- health -------------------------------------------------------------------------------------------------

# The checks docker-compose.yaml's healthchecks make, against this stack's addresses.
healthy() {
  case "$1" in
    postgres) PGCONNECT_TIMEOUT=3 "$(pg_bin)/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" ;;
    redis) [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]] ;;
    api-server) curl -fs -m 5 -o /dev/null "http://127.0.0.1:$API_PORT/api/v2/version" ;;
    scheduler) curl -fs -m 5 -o /dev/null "http://127.0.0.1:$SCHEDULER_HEALTH_PORT/health" ;;
    dag-processor) airflow jobs check --job-type DagProcessorJob --local >/dev/null 2>&1 ;;
    triggerer) airflow jobs check --job-type TriggererJob --local >/dev/null 2>&1 ;;
    worker)
      celery --app airflow.providers.celery.executors.celery_executor.app inspect ping \
        -d "celery@$(hostname)" --timeout 5 >/dev/null 2>&1 ;;
    serve-*)
      local server model port replicas i
      for server in "${SERVERS[@]}"; do
        read -r model port replicas <<<"$server"
        [[ "serve-$model" == "$1" ]] || continue
        for ((i = 0; i < replicas; i++)); do
          curl -fs -m 5 -o /dev/null "http://127.0.0.1:$((port + i))/healthz" || return 1
        done
      done ;;
  esac
}

elapsed() { awk -v ms="$(( $(date +%s%N) / 1000000 - STARTED_MS ))" 'BEGIN { printf "%.1f", ms / 1000 }'; }

# wait_healthy NAME...: each in turn until it is healthy; fails when its process exits or STACK_TIMEOUT passes.
wait_healthy() {
  local name deadline=$((SECONDS + ${STACK_TIMEOUT:-300}))
  for name in "$@"; do
    until healthy "$name"; do
      if [[ -z "$(pid_of "$name")" ]]; then
        tail -n 30 "$LOGS/$name.log" >&2 || true
        fail "$name exited: $LOGS/$name.log"
      fi
      (( SECONDS < deadline )) || fail "$name not healthy after ${STACK_TIMEOUT:-300}s: $LOGS/$name.log"
      sleep 1
    done
    say "$(printf '%-14s healthy at %5.1fs' "$name" "$(elapsed)")"
  done
}

server_names() { local s; for s in "${SERVERS[@]}"; do echo "serve-${s%% *}"; done; }

# --- commands -----------------------------------------------------------------------------------------------

up() {
  STARTED_MS=$(( $(date +%s%N) / 1000000 ))
  mkdir -p "$LOGS" "$PIDS" "$AIRFLOW_HOME"
  local item model port replicas
  for item in "${OVERRIDDEN[@]}"; do say "from the environment, not deploy/airflow.env: $item"; done
  postgres_up
  redis_up
  say "$(printf '%-14s up at %5.1fs (127.0.0.1:%s)' postgres "$(elapsed)" "$PG_PORT")"
  print_env >"$STACK/stack.env"
  # The registry's tables before any server or task opens it: CREATE TABLEs racing on Postgres can fail.
  if (( ${#SERVERS[@]} )); then
    keiko models list "${SERVERS[0]%% *}" >>"$LOGS/registry-init.log" 2>&1 \
      || die "the registry's tables could not be created: $LOGS/registry-init.log"
  fi
  for item in "${SERVERS[@]}"; do
    read -r model port replicas <<<"$item"
    start "serve-$model" keiko serve --model "$model" --port "$port" --replicas "$replicas"
  done
  airflow db migrate >>"$LOGS/migrate.log" 2>&1 || fail "airflow db migrate failed: $LOGS/migrate.log"
  say "$(printf '%-14s done at %5.1fs' "db migrate" "$(elapsed)")"
  if [[ ! -s "$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE" ]]; then  # as docker-compose's airflow-init
    python -c 'import json, os, sys; print(json.dumps({os.environ["_AIRFLOW_WWW_USER_USERNAME"]: sys.argv[1]}))' \
      "${_AIRFLOW_WWW_USER_PASSWORD:-airflow}" >"$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"
  fi
  start api-server airflow api-server
  start scheduler airflow scheduler
  start dag-processor airflow dag-processor
  start triggerer airflow triggerer
  start worker airflow celery worker
  wait_healthy redis "${AIRFLOW_COMPONENTS[@]}" $(server_names)
  say "up in $(elapsed)s: Airflow at $AIRFLOW__API__BASE_URL (user ${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS%%:*}," \
    "passwords in $AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE); its settings: source $STACK/stack.env"
}

down() {
  local name servers=()
  for name in "$PIDS"/serve-*.pid; do [[ -e "$name" ]] && servers+=("$(basename "$name" .pid)"); done
  # All at once: one after the other took 35 s.
  for name in "${servers[@]}" "${AIRFLOW_COMPONENTS[@]}"; do stop "$name" 60 & done
  wait
  stop redis
  postgres_down
  rm -f "$STACK/stack.env"
}

# A line per component: name, state, pid, log. Exit status 1 unless every one is healthy.
status() {
  local name pid state code=0
  for name in postgres redis "${AIRFLOW_COMPONENTS[@]}" $(server_names); do
    if [[ "$name" == postgres ]]; then
      pid="$(head -n 1 "$PGDATA/postmaster.pid" 2>/dev/null || true)"
    else
      pid="$(pid_of "$name")"
    fi
    if [[ -z "$pid" ]]; then
      state=stopped code=1
    elif healthy "$name"; then
      state=healthy
    else
      state=unhealthy code=1
    fi
    printf '%-14s %-10s %-8s %s\n' "$name" "$state" "${pid:--}" "$LOGS/$name.log"
  done
  return "$code"
}

command="${1:-}"
case "$command" in
  up | down | status | env) ;;
  *) die "usage: scripts/stack.sh up|down|status|env" ;;
esac
# `status` and `down` find the stack that `up` started, whatever this shell sets.
if [[ "$command" == status || "$command" == down ]] && [[ -s "$STACK/stack.env" ]]; then
  # shellcheck disable=SC1091
  source "$STACK/stack.env"
fi
stack_env
case "$command" in
  env) print_env ;;
  *) "$command" ;;
esac
