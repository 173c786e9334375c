-- user_value online rows of day {{ day }}: every user active that day (the population the batch scores), with the
-- last answer a server logged for them that day (NULL version: none logged; variant `fallback`: the batch lacked
-- the user or had expired) and whether they purchased in the 7 days after it (model.yaml label_horizon_days: the
-- monitor judges a day once those have landed). A batch model's answers are logged under the day they were served:
-- {{ served_from }}, the earlier of the day and today.
-- Rendered per monitor run; valid Trino and DuckDB.
WITH answered AS (
    SELECT
        user_id, request_id, version, variant, score, served_at,
        ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY served_at DESC, request_id DESC) AS nth
    FROM predictions
    WHERE dt = '{{ served_from }}' AND model = '{{ model }}' AND user_id IS NOT NULL
),
bought AS (
    SELECT DISTINCT user_id
    FROM user_purchases
    WHERE dt > '{{ day }}' AND CAST(dt AS DATE) <= DATE '{{ day }}' + INTERVAL '7' DAY
)
SELECT
    p.profile_id,
    p.user_id,
    a.request_id,
    a.version,
    a.variant,
    a.score,
    a.served_at,
    CASE WHEN b.user_id IS NULL THEN 0 ELSE 1 END AS outcome
FROM user_profiles AS p
LEFT JOIN answered AS a ON a.user_id = p.user_id AND a.nth = 1
LEFT JOIN bought AS b ON b.user_id = p.user_id
WHERE p.dt = '{{ day }}'
ORDER BY p.profile_id
