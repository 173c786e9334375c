-- user_value training rows: one row per user active on a day of the window whose next 7 days are in the window too
-- (a profile snapshot, from the daily `user_profiles`), labelled 1 if the user purchased in those 7 days.
-- A row's `dt` is the day its label closed, its snapshot's day + 7: the run's day holds the out-of-time test rows
-- (snapshots of ds - 7), the day before the valid ones, as for the impression-level models. The last 7 snapshot
-- days of the window have no label yet; the run's batch (batch_keys.sql) scores them.
-- Rendered per run; valid Trino and DuckDB.
WITH snapshots AS (
    SELECT dt, event_time, profile_id, user_id, os, country, sessions_today, sessions_7d, active_days_7d, purchases_28d
    FROM user_profiles
    WHERE dt BETWEEN '{{ window_start }}' AND '{{ window_end }}'
        AND CAST(dt AS DATE) <= DATE '{{ window_end }}' - INTERVAL '7' DAY
),
bought AS (
    SELECT DISTINCT user_id, CAST(dt AS DATE) AS day
    FROM user_purchases
    WHERE dt BETWEEN '{{ window_start }}' AND '{{ window_end }}'
)
SELECT
    CAST(CAST(CAST(s.dt AS DATE) + INTERVAL '7' DAY AS DATE) AS VARCHAR) AS dt,
    s.event_time,
    s.profile_id,
    s.user_id,
    s.os,
    s.country,
    s.sessions_today,
    s.sessions_7d,
    s.active_days_7d,
    s.purchases_28d,
    MAX(CASE WHEN b.user_id IS NULL THEN 0 ELSE 1 END) AS purchased_7d
FROM snapshots AS s
LEFT JOIN bought AS b
    ON b.user_id = s.user_id AND b.day > CAST(s.dt AS DATE) AND b.day <= CAST(s.dt AS DATE) + INTERVAL '7' DAY
GROUP BY s.dt, s.event_time, s.profile_id, s.user_id, s.os, s.country, s.sessions_today, s.sessions_7d,
    s.active_days_7d, s.purchases_28d
ORDER BY s.event_time, s.profile_id
