#!/usr/bin/env bash
# make backfill MODEL=ctr FROM=2026-11-01 TO=2026-11-07: retrain keiko_<MODEL> for every day FROM..TO
# (both included) through Airflow's own backfill, on the running scheduler (`make airflow`), and follow it
# to the end. Backfill runs register each day's model as `historical` and never deploy.
set -euo pipefail
: "${MODEL:?MODEL=<model>}" "${FROM:?FROM=YYYY-MM-DD}" "${TO:?TO=YYYY-MM-DD}"
for day in "$FROM" "$TO"; do
  [[ "$day" =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}$ ]] && date -d "$day" >/dev/null 2>&1 \
    || { echo "backfill: '$day' is not a day (YYYY-MM-DD)" >&2; exit 2; }
done
[[ ! "$FROM" > "$TO" ]] || { echo "backfill: FROM=$FROM is after TO=$TO" >&2; exit 2; }
DAG="keiko_${MODEL}"
BIN="$(dirname "$0")/../.venv/bin"
export PATH="$BIN:$PATH"

if ! airflow jobs check --job-type SchedulerJob --local >/dev/null 2>&1; then
  echo "backfill: no Airflow scheduler is running here. Start one with 'make airflow' (another terminal)." >&2
  exit 2
fi
# The DAG's schedule fires at 02:00 for the day before, so the logical date of day TO is TO 02:00:
# --to-date ends with TO itself, not at its midnight.
airflow backfill create --dag-id "$DAG" --from-date "$FROM" --to-date "${TO}T23:59:59" \
  ${REPROCESS:+--reprocess-behavior "$REPROCESS"} ${MAX_ACTIVE_RUNS:+--max-active-runs "$MAX_ACTIVE_RUNS"}

# Follow the backfill's runs (run ids backfill__<logical date>) until none is queued or running.
while true; do
  summary=$(airflow dags list-runs "$DAG" -o json 2>/dev/null | FROM="$FROM" TO="$TO" python3 -c '
import collections, json, os, sys
days = lambda run: os.environ["FROM"] <= run["logical_date"][:10] <= os.environ["TO"]
runs = [r for r in json.load(sys.stdin) if r["run_id"].startswith("backfill__") and days(r)]
states = collections.Counter(r["state"] for r in runs)
done = states["success"] + states["failed"]
print(f"{done}/{len(runs)} runs finished", dict(states), "running" if done < len(runs) else "done")')
  echo "$(date -u +%H:%M:%S) $DAG backfill $FROM..$TO: $summary"
  [[ "$summary" == *done ]] && break
  sleep "${POLL_SECONDS:-15}"
done
"$BIN/keiko" models list "$MODEL"
[[ "$summary" != *"'failed'"* ]] || { echo "backfill: some runs failed: 'keiko why $MODEL <day>' says why" >&2; exit 1; }
