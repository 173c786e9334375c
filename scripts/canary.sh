#!/usr/bin/env bash
# `make canary` (after `make demo`): retrain ctr on the day after the demo's and deploy the candidate as a canary
# under `airflow dags test`, while `keiko traffic` lives one day after another through the two replicas. The canary
# task defers between its analyses; each step's verdict table is in its log; the candidate is promoted after the last
# step (or reverted, naming the check, if it is worse online). Then `keiko status` and the run page.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$PWD/.venv/bin"
DEMO_DATE="${DEMO_DATE:-2026-11-21}"
RUN_DATE="$(date -u -d "$DEMO_DATE + 1 day" +%F)"  # the demo lived this day through the replicas
TRAFFIC_ROWS="${TRAFFIC_ROWS:-20000}"              # impressions per lived day
export KEIKO_HOME="${KEIKO_HOME:-$PWD/.keiko}"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$KEIKO_HOME/airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="$PWD/dags" AIRFLOW__CORE__PLUGINS_FOLDER="$PWD/plugins"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
LOGS="$KEIKO_HOME/logs"
step() { printf '\n==> %s\n' "$*"; }

production="$("$BIN/python" -c "
from keiko.config import settings; from keiko.registry import open_registry
print(open_registry(settings().registry_url).alias('ctr') or '')")"
if [[ -z "$production" ]]; then
  echo "ctr has no production version: run \`make demo\` first (a canary needs a stable version beside it)" >&2
  exit 2
fi
if [[ ! -d "$KEIKO_HOME/warehouse/impressions/dt=$RUN_DATE" ]]; then
  echo "no impressions of $RUN_DATE in the warehouse: run \`make demo\` first (it lives that day)" >&2
  exit 2
fi
read -r -a urls <<< "$("$BIN/python" -c "
from keiko.config import settings; from keiko.modeldef import load_model
serving = load_model('ctr').config.serving
print(' '.join(settings().serving_urls('ctr', serving.port, serving.replicas)))")"

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
step "${#urls[@]} ctr replicas serving v$production: ${urls[*]} (log: $LOGS/serve-ctr.log)"
"$BIN/keiko" serve --model ctr > "$LOGS/serve-ctr.log" 2>&1 &
pids+=($!)
for url in "${urls[@]}"; do
  for _ in $(seq 150); do curl -fs "$url/readyz" > /dev/null && break; sleep 0.2; done
  echo "up: $url $(curl -s "$url/version" | cut -c1-80)"
done

# Traffic: once the replicas serve the canary, one day after another (each day's outcomes land with it) until the run
# ends. Users keep their variant across days and replicas.
(
  until curl -s "${urls[0]}/version" | grep -q '"canary":{'; do sleep 1; done
  day="$(date -u -d "$RUN_DATE + 1 day" +%F)"
  while true; do
    "$BIN/keiko" traffic --model ctr --day "$day" --rows "$TRAFFIC_ROWS" >> "$LOGS/canary-traffic.log" 2>&1
    echo "    (traffic: lived $day, $TRAFFIC_ROWS impressions)"
    day="$(date -u -d "$day + 1 day" +%F)"
  done
) &
pids+=($!)

step "airflow dags test keiko_ctr $RUN_DATE, deploy_strategy canary (full log: $LOGS/dags-test-canary.log)"
conf='{"deploy_strategy": "canary", "reason": "make canary"}'
"$BIN/airflow" dags test keiko_ctr "$RUN_DATE" -c "$conf" 2>&1 | tee "$LOGS/dags-test-canary.log" \
  | grep --line-buffered -E 'running task|\] \[ *[0-9.]+s\]|\] +(check  |error rate|p95 latency|predictions KL|online logloss|calibration  |verdict:)|still running|keiko: error|DagRun Finished' \
  | sed -E 's/^[0-9TZ:.-]+ \[[a-z ]+\] //; s/ \[airflow[^]]*\].*$//; s/^\[DAG TEST\] running task <TaskInstance: ([^ ]+).*/--- \1/'
"$BIN/python" -m keiko.dags_test

step "keiko status ctr"
"$BIN/keiko" status ctr
step "keiko why ctr $RUN_DATE"
"$BIN/keiko" why ctr "$RUN_DATE"
