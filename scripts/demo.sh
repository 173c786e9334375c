#!/usr/bin/env bash
# `make demo`: synthesise the warehouse, start two ctr model-server replicas, run keiko_ctr for the
# last day with `airflow dags test` (its deploy rolls them one at a time), print what came out, and
# stop the servers. Safe to run again: the second
# run compares its candidate against the model the first one deployed.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$PWD/.venv/bin"
MODEL=ctr
PORT="${KEIKO_DEMO_PORT:-8601}"
REPLICAS=2
DEMO_DATE="${DEMO_DATE:-2026-11-21}" DEMO_DAYS="${DEMO_DAYS:-14}" DEMO_ROWS="${DEMO_ROWS:-300000}"
export KEIKO_HOME="${KEIKO_HOME:-$PWD/.keiko}"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$KEIKO_HOME/airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="$PWD/dags" AIRFLOW__CORE__PLUGINS_FOLDER="$PWD/plugins"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
URLS=()
for i in $(seq 0 $((REPLICAS - 1))); do URLS+=("http://127.0.0.1:$((PORT + i))"); done
export KEIKO_SERVING_URLS_CTR="$(IFS=,; echo "${URLS[*]}")"
LOGS="$KEIKO_HOME/logs"
mkdir -p "$LOGS"
step() { printf '\n==> %s\n' "$*"; }

step "synthetic warehouse: $DEMO_DAYS days x $DEMO_ROWS rows ending $DEMO_DATE"
# The generator's code is part of the stamp: a changed generator writes the warehouse again.
generator="$(cat plugins/keiko/synth.py plugins/keiko/faults.py | sha256sum | cut -c1-12)"
stamp="$KEIKO_HOME/warehouse/.synth-$DEMO_DATE-$DEMO_DAYS-$DEMO_ROWS-$generator"
if [[ -f "$stamp" ]]; then
  echo "already written (deterministic: same arguments, same bytes)"
else
  "$BIN/keiko" synth --end-date "$DEMO_DATE" --days "$DEMO_DAYS" --rows-per-day "$DEMO_ROWS"
  touch "$stamp"
fi

step "airflow metadata database ($AIRFLOW_HOME)"
"$BIN/airflow" db migrate > "$LOGS/airflow-db-migrate.log" 2>&1 || { cat "$LOGS/airflow-db-migrate.log"; exit 1; }
echo "ready"

step "$REPLICAS model-server replicas for $MODEL: ${URLS[*]}"
for url in "${URLS[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/${url##*:}") 2>/dev/null; then
    echo "port ${url##*:} is already in use: stop what listens there or set KEIKO_DEMO_PORT" >&2
    exit 1
  fi
done
"$BIN/keiko" serve --model "$MODEL" --port "$PORT" --replicas "$REPLICAS" > "$LOGS/serve-$MODEL.log" 2>&1 &
server_pid=$!
trap 'kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true' EXIT
for url in "${URLS[@]}"; do
  for _ in $(seq 150); do
    curl -fs "$url/healthz" > /dev/null && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$LOGS/serve-$MODEL.log"; exit 1; }
    sleep 0.2
  done
  echo "up: $url $(curl -s "$url/version")"
done
echo "(pid $server_pid, log $LOGS/serve-$MODEL.log)"

step "airflow dags test keiko_$MODEL $DEMO_DATE (full log: $LOGS/dags-test-$MODEL.log)"
"$BIN/airflow" dags test "keiko_$MODEL" "$DEMO_DATE" 2>&1 | tee "$LOGS/dags-test-$MODEL.log" \
  | grep --line-buffered -E 'running task|\] \[ *[0-9.]+s\]|skipped:|keiko: error|DagRun Finished' \
  | sed -E 's/^[0-9TZ:.-]+ \[[a-z ]+\] //; s/ \[airflow[^]]*\].*$//; s/^\[DAG TEST\] running task <TaskInstance: ([^ ]+).*/--- \1/'

"$BIN/keiko" summary --model "$MODEL" --ds "$DEMO_DATE"
