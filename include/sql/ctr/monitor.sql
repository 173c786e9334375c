-- ctr online rows of day {{ day }}: every impression of the day, with the last answer a server logged for it
-- (a retried request or a replayed day is logged again; NULL version: no answer logged) and whether it was clicked.
-- An answer is logged under the day it was served: the impression's day or the next in production, any later day
-- in a replay of the past, today in a replay of a synthetic day still to come. {{ served_from }} is the earlier
-- of the day and today.
-- {{ inputs }}: the model's input fields (features.py INPUT_SCHEMA), as the server read them.
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
    CASE WHEN c.impression_id IS NULL THEN 0 ELSE 1 END AS outcome
FROM impressions AS i
LEFT JOIN answered AS a ON a.impression_id = i.impression_id AND a.nth = 1
LEFT JOIN clicked AS c ON c.impression_id = i.impression_id
WHERE i.dt = '{{ day }}'
ORDER BY i.impression_id
