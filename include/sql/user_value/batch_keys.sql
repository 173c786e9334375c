-- user_value's key set for the run of {{ ds }}: every user active in the data window, with their latest profile
-- snapshot (the features as of their last active day). batch_score scores each row and writes user_id -> score to
-- the batch store. Rendered per run; valid Trino and DuckDB.
WITH latest AS (
    SELECT
        user_id, os, country, sessions_today, sessions_7d, active_days_7d, purchases_28d,
        ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY dt DESC) AS nth
    FROM user_profiles
    WHERE dt BETWEEN '{{ window_start }}' AND '{{ window_end }}'
)
SELECT user_id, os, country, sessions_today, sessions_7d, active_days_7d, purchases_28d
FROM latest
WHERE nth = 1
ORDER BY user_id
