#!/usr/bin/env bash
# make backfill MODEL=ctr FROM=2026-11-01 TO=2026-11-07: retrain keiko_<MODEL> for every day FROM..TO
# (both included) through Airflow's own backfill, on the running scheduler (`make airflow` or `make stack`), and
# follow it to the end. Backfill runs register each day's model as `historical` and never deploy.
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
# On the stack (`make stack`, scripts/stack.sh), its own settings: PostgreSQL, not the SQLite of `make airflow`.
stack_env="${KEIKO_HOME:-$(dirname "$0")/../.keiko}/stack/stack.env"
if [[ -s "$stack_env" ]]; then
  # shellcheck disable=SC1090
  source "$stack_env"
fi
backfills() { "$BIN/python" -m keiko.oncall.backfill "$1" --model "$MODEL"; }

if ! airflow jobs check --job-type SchedulerJob --local >/dev/null 2>&1; then
  echo "backfill: no Airflow scheduler is running here. Start one with 'make airflow' or 'make stack'." >&2
  exit 2
fi
# An unknown model (exit 2), or an earlier backfill still in progress (exit 1, with its days and how to end it),
# in a line or a few, before Airflow is asked for anything.
backfills active
# The DAG's schedule fires at 02:00 for the day before, so the logical date of day TO is TO 02:00:
# --to-date ends with TO itself, not at its midnight.
# On SQLite the scheduler's own writes can leave `backfill create` with "database is locked". Airflow then
# removes the half-made backfill so that it can be asked again; when that removal is locked out too, the
# scheduler removes it after 2 minutes, and until then Airflow says another backfill is running.
met_lock="" attempt=1
deadline=$(( SECONDS + ${LOCKED_RETRY_DEADLINE:-240} ))
while true; do
  if created=$(airflow backfill create --dag-id "$DAG" --from-date "$FROM" --to-date "${TO}T23:59:59" \
      ${REPROCESS:+--reprocess-behavior "$REPROCESS"} ${MAX_ACTIVE_RUNS:+--max-active-runs "$MAX_ACTIVE_RUNS"} 2>&1); then
    echo "$created"
    break
  fi
  [[ "$created" == *"database is locked"* ]] && met_lock=1
  if ! [[ "$created" == *"database is locked"* || ( -n "$met_lock" && "$created" == *"Another backfill is running"* ) ]] \
      || (( SECONDS >= deadline )); then
    echo "$created" >&2
    echo "backfill: 'airflow backfill create' failed (above); docs/runbook.md#stuck-backfill" >&2
    exit 1
  fi
  attempt=$(( attempt + 1 ))
  echo "backfill: the metadata database was busy; asking again (attempt $attempt)" >&2
  sleep "${LOCKED_RETRY_SECONDS:-5}"
done

# Ctrl-C here would otherwise leave the backfill going in the scheduler, and the DAG takes one at a time.
trap 'echo; backfills cancel; exit 130' INT TERM
# Follow this backfill until the scheduler marks it complete: the summary every poll, each day's line (its state,
# the task it is at, what a waiting day waits for, why a failed one failed) whenever it changed.
shown=""
while true; do
  progress=$(backfills progress 2>&1) || { echo "$progress" >&2; exit 1; }
  summary=${progress%%$'\n'*}
  echo "$(date -u +%H:%M:%S) $DAG backfill $FROM..$TO: $summary"
  while IFS= read -r day; do
    [[ -n "$day" && $'\n'"$shown"$'\n' != *$'\n'"$day"$'\n'* ]] && echo "$day"
  done <<<"${progress#"$summary"}"
  shown=${progress#"$summary"}
  [[ "$summary" == *done ]] && break
  sleep "${POLL_SECONDS:-15}"
done
trap - INT TERM
"$BIN/keiko" models list "$MODEL"
[[ "$summary" != *"'failed'"* ]] || { echo "backfill: some days failed (above); 'keiko why $MODEL <day>' says more" >&2; exit 1; }
