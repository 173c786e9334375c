-- cvr online rows of day {{ day }}: every clicked impression of the day (the model is P(conversion | click)),
-- with the last answer a server logged for it (a retried request or a replayed day is logged again; NULL version:
-- none logged) and whether it converted. The
-- conversion log is partitioned by the impression's day (attributed upstream, within 72 h of the click).
-- An answer is logged under the day it was served: the impression's day or the next in production, any later day
-- in a replay of the past, today in a replay of a synthetic day still to come. {{ served_from }} is the earlier
-- of the day and today.
-- Rendered per monitor run; valid Trino and DuckDB.
WITH answered AS (
    SELECT
        impression_id, request_id, version, variant, score, served_at,
        {%- for column in inputs %} {{ column }},{% endfor %}
        ROW_NUMBER() OVER (PARTITION BY impression_id ORDER BY served_at DESC, request_id DESC) AS nth
    FROM predictions
    WHERE dt >= '{{ served_from }}' AND model = '{{ model }}' AND impression_id IS NOT NULL
),
clicked AS (
    SELECT DISTINCT impression_id
    FROM clicks
    WHERE dt = '{{ day }}'
),
converted AS (
    SELECT DISTINCT impression_id
    FROM conversions
    WHERE dt = '{{ day }}'
)
SELECT
    i.impression_id,
    a.request_id,
    a.version,
    a.variant,
    a.score,
    a.served_at,
    {%- for column in inputs %}
    a.{{ column }},
    {%- endfor %}
    CASE WHEN v.impression_id IS NULL THEN 0 ELSE 1 END AS outcome
FROM impressions AS i
JOIN clicked AS c ON c.impression_id = i.impression_id
LEFT JOIN answered AS a ON a.impression_id = i.impression_id AND a.nth = 1
LEFT JOIN converted AS v ON v.impression_id = i.impression_id
WHERE i.dt = '{{ day }}'
ORDER BY i.impression_id
