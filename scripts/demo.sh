#!/usr/bin/env bash
# `make demo`: synthesise the warehouse, start the batch store (Redis) and each model's server replicas, run
# keiko_ctr, keiko_cvr and keiko_user_value for the last day with `airflow dags test` (ctr's and cvr's deploys roll
# their replicas one at a time; user_value's scores every active user into the batch store and moves its pointer),
# print what came out, look a user up, live a day of traffic through the online models and monitor it, and stop
# the servers (the batch store keeps running: `scripts/batch_store.sh down`). Safe to run again: the second run
# compares each candidate against the model the first one deployed.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$PWD/.venv/bin"
MODELS=(ctr cvr user_value)
ONLINE=(ctr cvr)  # served per request: live traffic and the monitor below
DEMO_DATE="${DEMO_DATE:-2026-11-21}" DEMO_DAYS="${DEMO_DAYS:-21}" DEMO_ROWS="${DEMO_ROWS:-300000}"
export KEIKO_HOME="${KEIKO_HOME:-$PWD/.keiko}"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$KEIKO_HOME/airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="$PWD/dags" AIRFLOW__CORE__PLUGINS_FOLDER="$PWD/plugins"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
LOGS="$KEIKO_HOME/logs"
mkdir -p "$LOGS"
step() { printf '\n==> %s\n' "$*"; }

step "synthetic warehouse: $DEMO_DAYS days x $DEMO_ROWS rows ending $DEMO_DATE"
# The generator's code is part of the stamp: a changed generator writes the warehouse again.
generator="$(cat plugins/keiko/synth.py plugins/keiko/synth_users.py plugins/keiko/faults.py | sha256sum | cut -c1-12)"
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

step "batch store for batch models"
scripts/batch_store.sh up

server_pids=()
trap 'kill "${server_pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
for model in "${MODELS[@]}"; do
  # Ports and replicas from the model's serving: section (what `keiko serve` and the deploy stage use).
  read -r -a urls <<< "$("$BIN/python" -c "
from keiko.config import settings; from keiko.modeldef import load_model
serving = load_model('$model').config.serving
print(' '.join(settings().serving_urls('$model', serving.port, serving.replicas)))")"
  step "${#urls[@]} model-server replicas for $model: ${urls[*]}"
  for url in "${urls[@]}"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/${url##*:}") 2>/dev/null; then
      echo "port ${url##*:} is already in use: stop what listens there (or change serving.port in model.yaml)" >&2
      exit 1
    fi
  done
  "$BIN/keiko" serve --model "$model" > "$LOGS/serve-$model.log" 2>&1 &
  server_pids+=($!)
  for url in "${urls[@]}"; do
    for _ in $(seq 150); do
      curl -fs "$url/healthz" > /dev/null && break
      kill -0 "${server_pids[-1]}" 2>/dev/null || { cat "$LOGS/serve-$model.log"; exit 1; }
      sleep 0.2
    done
    echo "up: $url $(curl -s "$url/version")"
  done
  echo "(pid ${server_pids[-1]}, log $LOGS/serve-$model.log)"
done

for model in "${MODELS[@]}"; do
  step "airflow dags test keiko_$model $DEMO_DATE (full log: $LOGS/dags-test-$model.log)"
  "$BIN/airflow" dags test "keiko_$model" "$DEMO_DATE" 2>&1 | tee "$LOGS/dags-test-$model.log" \
    | grep --line-buffered -E 'running task|\] \[ *[0-9.]+s\]|skipped:|keiko: error|DagRun Finished' \
    | sed -E 's/^[0-9TZ:.-]+ \[[a-z ]+\] //; s/ \[airflow[^]]*\].*$//; s/^\[DAG TEST\] running task <TaskInstance: ([^ ]+).*/--- \1/'
done

# `airflow dags test` records its run as started at its logical date (apache/airflow#66127): the grid would show
# a run of minutes as days long.
fix_dags_test_runs() { "$BIN/python" -m keiko.dags_test; }
fix_dags_test_runs

for model in "${MODELS[@]}"; do
  "$BIN/keiko" summary --model "$model" --ds "$DEMO_DATE"
done

step "user_value from the batch store: what Redis holds, a scored user, and one the batch lacks (the fallback)"
url="$("$BIN/python" -c "
from keiko.config import settings; from keiko.modeldef import load_model
serving = load_model('user_value').config.serving
print(settings().serving_urls('user_value', serving.port, serving.replicas)[0])")"
redis=(redis-cli -u "${KEIKO_BATCH_STORE_URL:-redis://127.0.0.1:6390/0}")
version="$("${redis[@]}" GET 'keiko:batch:{user_value}:pointer')"
echo "pointer: v${version:-none}; keys: $("${redis[@]}" --scan --pattern 'keiko:batch:{user_value}:*' | tr '\n' ' ')"
user="$("${redis[@]}" HRANDFIELD "keiko:batch:{user_value}:v$version")"
for id in ${user:-1} 999999999; do
  echo "POST $url/predict {\"rows\": [{\"user_id\": $id}]} -> $(curl -s -X POST "$url/predict" \
    -d "{\"rows\": [{\"user_id\": $id}]}")"
done
curl -s "$url/metrics" | grep '^keiko_batch_lookups_total'

# The served side: a day of live traffic after the training days through the replicas that now serve, then
# each model's monitor for that day under `airflow dags test` (the run whose sensors and lag judge it), and
# what it found: online logloss next to the version's offline figure and the live traffic's Bayes-optimal one.
LIVE_DATE="$(date -u -d "$DEMO_DATE + 1 day" +%F)"
for model in "${ONLINE[@]}"; do
  step "keiko traffic --model $model --day $LIVE_DATE (the day's impressions through the replicas, then its outcomes)"
  "$BIN/keiko" traffic --model "$model" --day "$LIVE_DATE" --rows-per-request 100
done
step "waiting for the servers to write their prediction logs (every serving.prediction_log.flush_seconds)"
"$BIN/python" - "$LIVE_DATE" <<'PY'
import sys, time
from keiko.config import settings
from keiko.warehouse import DuckDBWarehouse
day, deadline = sys.argv[1], time.monotonic() + 60
impressions = f"SELECT count(*) FROM impressions WHERE dt = '{day}'"
while True:
    warehouse = DuckDBWarehouse(settings().warehouse_dir)
    wanted = 2 * warehouse.query(impressions).column(0)[0].as_py()  # every impression, answered by each model
    logged = warehouse.query(
        f"SELECT count(*) FROM (SELECT DISTINCT model, impression_id FROM predictions WHERE impression_id IN "
        f"(SELECT impression_id FROM impressions WHERE dt = '{day}'))"
    ).column(0)[0].as_py() if "predictions" in warehouse.tables() else 0
    if logged >= wanted or time.monotonic() > deadline:
        print(f"{logged:,} of {wanted:,} answers logged")
        break
    time.sleep(1)
PY
for model in "${ONLINE[@]}"; do
  lag="$("$BIN/python" -c "from keiko.modeldef import load_model; print(load_model('$model').config.monitor_lag_days)")"
  run_date="$(date -u -d "$LIVE_DATE + $lag day" +%F)"
  step "airflow dags test keiko_monitor_$model $run_date: judges $LIVE_DATE (log: $LOGS/dags-test-monitor-$model.log)"
  "$BIN/airflow" dags test "keiko_monitor_$model" "$run_date" 2>&1 | tee "$LOGS/dags-test-monitor-$model.log" \
    | grep --line-buffered -E 'running task|\] \[ *[0-9.]+s\]|keiko: error|DagRun Finished' \
    | sed -E 's/^[0-9TZ:.-]+ \[[a-z ]+\] //; s/ \[airflow[^]]*\].*$//; s/^\[DAG TEST\] running task <TaskInstance: ([^ ]+).*/--- \1/'
  "$BIN/keiko" monitor "$model" --days 1
done
fix_dags_test_runs
