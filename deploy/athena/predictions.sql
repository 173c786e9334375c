-- The prediction log as an Athena table: what the model servers write (keiko.serving.prediction_log.log_schema)
-- at KEIKO_PREDICTION_LOG_URL/dt=<served day>/model=<model>/*.parquet, read by every model's monitor.sql.
-- Partition projection: no MSCK REPAIR or crawler after each new day; dt from the first model's start_date.
-- Every model's logged request fields (ModelDefinition.request_schema: an online model's feature inputs, a batch
-- model's key alone) are columns (a model without one reads NULL there); the identifiers impression_id and user_id
-- are the answer's own columns. user_value (serving.mode batch) logs user_id and the answer only. A new model with a
-- new request field adds its column here, and every model is in projection.model.values
-- (tests/deploy/test_athena_ddl.py checks this file against the models).
CREATE EXTERNAL TABLE IF NOT EXISTS predictions (
    request_id string,
    impression_id bigint,
    user_id bigint,
    version int,
    variant string,
    score double,
    served_at timestamp,
    event_time timestamp,
    app_id bigint,
    media_id bigint,
    ad_id bigint,
    campaign_id bigint,
    advertiser_category string,
    os string,
    device_model string,
    country string,
    position bigint,
    floor_price double
)
PARTITIONED BY (dt string, model string)
STORED AS PARQUET
LOCATION 's3://keiko-warehouse/predictions/'
TBLPROPERTIES (
    'projection.enabled' = 'true',
    'projection.dt.type' = 'date',
    'projection.dt.format' = 'yyyy-MM-dd',
    'projection.dt.range' = '2026-11-01,NOW',
    'projection.model.type' = 'enum',
    'projection.model.values' = 'ctr,cvr,user_value',
    'storage.location.template' = 's3://keiko-warehouse/predictions/dt=${dt}/model=${model}/'
);
