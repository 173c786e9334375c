-- cvr training rows: one row per clicked impression in the data window, labelled 1 if it converted.
-- Clicks are deduplicated (the click log repeats events). The conversion log is partitioned by the
-- impression's day (attributed upstream), so the window's partitions hold the window's conversions.
-- Rendered per run; valid Trino and DuckDB.
WITH clicked AS (
    SELECT DISTINCT impression_id
    FROM clicks
    WHERE dt BETWEEN '{{ window_start }}' AND '{{ window_end }}'
),
converted AS (
    SELECT DISTINCT impression_id
    FROM conversions
    WHERE dt BETWEEN '{{ window_start }}' AND '{{ window_end }}'
)
SELECT
    i.dt,
    i.event_time,
    i.impression_id,
    i.user_id,
    i.app_id,
    i.media_id,
    i.ad_id,
    i.campaign_id,
    i.advertiser_category,
    i.os,
    i.device_model,
    i.country,
    i.position,
    i.floor_price,
    CASE WHEN v.impression_id IS NULL THEN 0 ELSE 1 END AS converted
FROM impressions AS i
JOIN clicked AS c ON i.impression_id = c.impression_id
LEFT JOIN converted AS v ON i.impression_id = v.impression_id
WHERE i.dt BETWEEN '{{ window_start }}' AND '{{ window_end }}'
ORDER BY i.event_time, i.impression_id
