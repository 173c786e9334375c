"""The Athena warehouse against moto's server: Glue tables and partitions, Athena queries, results in S3.

moto does not run SQL. A query's result is whatever was queued through moto's API
(`POST /moto-api/static/athena/query-results`); moto hands it to the next StartQueryExecution and
writes it, as Athena does, to `<OutputLocation>/<QueryExecutionId>.csv`. So these tests prove the
client side: the query submitted with the right database, workgroup and output location, polling to
a final state, and the result CSV read back with the types of its ResultSetMetadata. DuckDB stands in
for Athena's engine: the queued result is exactly what DuckDB returns for the same rendered SQL.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import uuid
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import requests

from conftest import DS, END_DATE, run_steps
from keiko.athena import AthenaWarehouse
from keiko.aws import aws_client
from keiko.config import settings
from keiko.errors import KeikoError, MissingDataError
from keiko.modeldef import load_model
from keiko.warehouse import DuckDBWarehouse, open_warehouse, render_sql

# Athena's names for the Arrow types DuckDB returns (ResultSetMetadata), and Glue's for table columns.
ATHENA_TYPE_OF = {pa.int64(): "bigint", pa.int32(): "integer", pa.string(): "varchar", pa.float64(): "double"}
ATHENA_TYPE_OF |= {pa.bool_(): "boolean", pa.date32(): "date", pa.timestamp("us"): "timestamp"}
GLUE_TYPE_OF = {pa.int64(): "bigint", pa.int32(): "int", pa.string(): "string", pa.float64(): "double"}
GLUE_TYPE_OF |= {pa.bool_(): "boolean", pa.date32(): "date", pa.timestamp("us"): "timestamp"}


def athena_result(table: pa.Table) -> dict:
    """`table` as Athena's GetQueryResults has it: a header row, then every value as text, NULL as no value."""
    columns = [pc.cast(column, pa.string()).to_pylist() for column in table.columns]  # Arrow's text is Athena's
    rows = [{"Data": [{"VarCharValue": name} for name in table.column_names]}]
    rows += [
        {"Data": [{} if v is None else {"VarCharValue": v} for v in values]} for values in zip(*columns, strict=True)
    ]
    info = [
        {"Name": f.name, "Label": f.name, "Type": ATHENA_TYPE_OF[f.type], "Nullable": "UNKNOWN"} for f in table.schema
    ]
    return {"rows": rows, "column_info": info}


def queue_result(endpoint: str, result: dict) -> None:
    """The result moto gives the next query it is sent."""
    response = requests.post(f"{endpoint}/moto-api/static/athena/query-results", json={"results": [result]})
    assert response.status_code == 201, response.text


@pytest.fixture
def athena(aws: str, monkeypatch: pytest.MonkeyPatch, keiko_home: Path) -> dict:
    """KEIKO_WAREHOUSE=athena with a fresh Glue database and workgroup, artifacts in a fresh S3 bucket."""
    suffix = uuid.uuid4().hex[:10]
    bucket, database, workgroup = f"keiko-{suffix}", f"keiko_{suffix}", f"keiko-{suffix}"
    monkeypatch.setenv("KEIKO_WAREHOUSE", "athena")
    monkeypatch.setenv("KEIKO_ARTIFACT_ROOT", f"s3://{bucket}/keiko")
    monkeypatch.setenv("KEIKO_ATHENA_DATABASE", database)
    monkeypatch.setenv("KEIKO_ATHENA_WORKGROUP", workgroup)
    conn_id = settings().aws_conn_id
    aws_client("s3", conn_id).create_bucket(Bucket=bucket)
    aws_client("athena", conn_id).create_work_group(Name=workgroup, Configuration={"ResultConfiguration": {}})
    glue = aws_client("glue", conn_id)
    glue.create_database(DatabaseInput={"Name": database})
    return {"endpoint": aws, "bucket": bucket, "database": database, "workgroup": workgroup, "glue": glue}


def create_glue_table(athena: dict, name: str, schema: pa.Schema, days: list[str]) -> None:
    """A Glue table partitioned by dt, as the log loader registers it, with a partition per day."""
    location = f"s3://{athena['bucket']}/warehouse/{name}"
    descriptor = {
        "Columns": [{"Name": f.name, "Type": GLUE_TYPE_OF[f.type]} for f in schema if f.name != "dt"],
        "Location": location,
    }
    athena["glue"].create_table(
        DatabaseName=athena["database"],
        TableInput={
            "Name": name,
            "TableType": "EXTERNAL_TABLE",
            "PartitionKeys": [{"Name": "dt", "Type": "string"}],
            "StorageDescriptor": descriptor,
        },
    )
    if days:
        athena["glue"].batch_create_partition(
            DatabaseName=athena["database"],
            TableName=name,
            PartitionInputList=[
                {"Values": [day], "StorageDescriptor": {**descriptor, "Location": f"{location}/dt={day}"}}
                for day in days
            ],
        )


def mirror_in_glue(athena: dict, warehouse_dir: Path, tables: list[str]) -> None:
    """The session's DuckDB warehouse tables as Glue tables: same columns, a partition per `dt=` folder."""
    for name in tables:
        days = sorted(p.name.removeprefix("dt=") for p in (warehouse_dir / name).glob("dt=*"))
        schema = pq.read_schema(warehouse_dir / name / f"dt={days[-1]}" / "part-0.parquet")
        create_glue_table(athena, name, schema, days)


def submitted(athena: dict) -> list[dict]:
    """What was sent to Athena in this test's workgroup, as GetQueryExecution reports it."""
    client = aws_client("athena", settings().aws_conn_id)
    ids = client.list_query_executions(WorkGroup=athena["workgroup"])["QueryExecutionIds"]
    return [client.get_query_execution(QueryExecutionId=i)["QueryExecution"] for i in ids]


def test_extract_stage_on_athena_writes_what_duckdb_returns(athena, warehouse_dir, project_copy):
    # moto returns the whole result to GetQueryResults whatever MaxResults says (Athena returns one row),
    # and botocore parses it cell by cell: ~20 s for the 7-day window here. 3 days keep it to seconds.
    model_yaml = project_copy / "include" / "models" / "ctr" / "model.yaml"
    model_yaml.write_text(re.sub(r"^window_days: *\d+", "window_days: 3", model_yaml.read_text(), flags=re.M))
    model = load_model("ctr")
    assert model.config.window_days == 3
    sql = render_sql(model.sql_path, ds=END_DATE, window_days=3, model="ctr")
    expected = DuckDBWarehouse(warehouse_dir).query(sql)
    assert expected.num_rows > 50_000
    mirror_in_glue(athena, warehouse_dir, ["impressions", "clicks"])
    queue_result(athena["endpoint"], athena_result(expected))

    run_steps("extract")

    s3 = aws_client("s3", settings().aws_conn_id)
    raw_object = s3.get_object(Bucket=athena["bucket"], Key=f"keiko/ctr/{DS}/raw.parquet")
    raw = pq.read_table(io.BytesIO(raw_object["Body"].read()))
    assert raw.schema == expected.schema
    assert raw.equals(expected)
    result = json.loads(
        s3.get_object(Bucket=athena["bucket"], Key=f"keiko/ctr/{DS}/stages/extract.json")["Body"].read()
    )
    assert result["rows"] == expected.num_rows
    assert (result["window_start"], result["window_end"]) == ("2026-11-19", DS)

    [execution] = submitted(athena)
    assert execution["Query"] == sql
    assert execution["QueryExecutionContext"] == {"Database": athena["database"]}
    assert execution["WorkGroup"] == athena["workgroup"]
    output = f"s3://{athena['bucket']}/keiko/athena-results"  # KEIKO_ATHENA_OUTPUT's default
    assert execution["ResultConfiguration"]["OutputLocation"] == f"{output}/{execution['QueryExecutionId']}.csv"
    assert execution["Status"]["State"] == "SUCCEEDED"


def test_results_are_read_with_athenas_types_and_nulls(athena):
    """Every type keiko maps, NULL (an empty unquoted field) apart from '' (an empty quoted one)."""
    names = ["name", "n", "small", "price", "ok", "day", "at", "amount"]
    types = ["varchar", "bigint", "integer", "double", "boolean", "date", "timestamp", "decimal"]
    values = [
        ["a,b", "9007199254740993", "-3", "0.1", "true", "2026-11-21", "2026-11-21 23:59:59.123", "12.34"],
        ["", None, None, "1.0E-7", "false", None, "2026-11-21 00:00:00.000", "-0.50"],
        [None, "0", "7", None, None, "2026-01-01", None, None],
        ["line\nbreak", "1", "1", "NaN", "true", "2026-11-20", "2026-11-20 01:02:03.000", "0.00"],
    ]
    info = [{"Name": n, "Type": t} for n, t in zip(names, types, strict=True)]
    info[-1] |= {"Precision": 10, "Scale": 2}
    rows = [{"Data": [{"VarCharValue": n} for n in names]}]
    rows += [{"Data": [{} if v is None else {"VarCharValue": v} for v in row]} for row in values]
    queue_result(athena["endpoint"], {"rows": rows, "column_info": info})

    table = open_warehouse(settings()).query("SELECT name, n, small, price, ok, day, at, amount FROM typed")

    arrow = [pa.string(), pa.int64(), pa.int32(), pa.float64(), pa.bool_(), pa.date32(), pa.timestamp("us")]
    assert table.schema == pa.schema(list(zip(names, [*arrow, pa.decimal128(10, 2)], strict=True)))
    columns = table.to_pydict()
    assert columns["name"] == ["a,b", "", None, "line\nbreak"]
    assert columns["n"] == [9007199254740993, None, 0, 1]  # beyond float precision: read as an integer
    assert columns["small"] == [-3, None, 7, 1]
    assert columns["price"][:3] == [0.1, 1e-7, None] and columns["price"][3] != columns["price"][3]  # NaN
    assert columns["ok"] == [True, False, None, True]
    assert columns["day"] == [dt.date(2026, 11, 21), None, dt.date(2026, 1, 1), dt.date(2026, 11, 20)]
    assert columns["at"][0] == dt.datetime(2026, 11, 21, 23, 59, 59, 123000) and columns["at"][2] is None
    assert columns["amount"] == [Decimal("12.34"), Decimal("-0.50"), None, Decimal("0.00")]


def test_an_unmapped_athena_type_is_a_clear_error(athena):
    info = [{"Name": "impression_id", "Type": "bigint"}, {"Name": "tags", "Type": "array"}]
    rows = [{"Data": [{"VarCharValue": "impression_id"}, {"VarCharValue": "tags"}]}]
    rows.append({"Data": [{"VarCharValue": "1"}, {"VarCharValue": "[a, b]"}]})
    queue_result(athena["endpoint"], {"rows": rows, "column_info": info})
    with pytest.raises(KeikoError, match=r"column 'tags' has Athena type 'array'.*CAST it"):
        open_warehouse(settings()).query("SELECT impression_id, tags FROM impressions")


def test_missing_partitions_and_tables_are_named_before_any_query(athena, warehouse_dir):
    days = [(END_DATE - dt.timedelta(days=i)).isoformat() for i in range(3)]
    schema = pa.schema([("impression_id", pa.int64()), ("dt", pa.string())])
    create_glue_table(athena, "impressions", schema, days)
    create_glue_table(athena, "clicks", schema, days[1:])  # the run day's clicks have not landed
    warehouse = open_warehouse(settings())
    assert warehouse.tables() == ["clicks", "impressions"]
    sql = render_sql(load_model("ctr").sql_path, ds=END_DATE, window_days=3, model="ctr")
    start = END_DATE - dt.timedelta(days=2)

    with pytest.raises(MissingDataError, match=rf"Glue database {athena['database']}: clicks/dt={DS} \(") as error:
        warehouse.check_window(sql, start, END_DATE)
    assert "impressions" not in str(error.value)
    with pytest.raises(MissingDataError, match=r"conversions \(no such table\), impressions/dt=2026-11-18"):
        joined = "SELECT * FROM impressions JOIN conversions USING (impression_id)"
        warehouse.check_window(joined, start - dt.timedelta(days=1), END_DATE)
    warehouse.check_window(sql, start, END_DATE - dt.timedelta(days=1))  # the days that landed are enough
    assert submitted(athena) == []


def test_a_table_with_partition_projection_has_the_days_whose_objects_landed(athena):
    """Projected partitions are never in Glue (deploy/athena/predictions.sql's table is one): a day is there when S3
    has objects under the location template's day."""
    location = f"s3://{athena['bucket']}/warehouse/predictions"
    athena["glue"].create_table(
        DatabaseName=athena["database"],
        TableInput={
            "Name": "predictions",
            "TableType": "EXTERNAL_TABLE",
            "PartitionKeys": [{"Name": "dt", "Type": "string"}, {"Name": "model", "Type": "string"}],
            "StorageDescriptor": {"Columns": [{"Name": "score", "Type": "double"}], "Location": location},
            "Parameters": {
                "projection.enabled": "true",
                "projection.dt.type": "date",
                "storage.location.template": f"{location}/dt=${{dt}}/model=${{model}}/",
            },
        },
    )
    s3 = aws_client("s3", settings().aws_conn_id)
    s3.put_object(Bucket=athena["bucket"], Key=f"warehouse/predictions/dt={DS}/model=ctr/part-0.parquet", Body=b"x")
    warehouse = open_warehouse(settings())
    day_before = END_DATE - dt.timedelta(days=1)
    assert warehouse.partition_days("predictions", day_before, END_DATE) == {DS}
    assert warehouse.missing_partitions({"predictions"}, [day_before, END_DATE]) == [
        f"predictions/dt={day_before.isoformat()}"
    ]
    assert submitted(athena) == []


def test_a_partitions_fingerprint_follows_its_objects_etags(athena):
    create_glue_table(athena, "clicks", pa.schema([("impression_id", pa.int64()), ("dt", pa.string())]), [DS])
    s3, key = aws_client("s3", settings().aws_conn_id), f"warehouse/clicks/dt={DS}/part-0.parquet"
    warehouse = open_warehouse(settings())
    assert warehouse.partition_fingerprint("clicks", END_DATE - dt.timedelta(days=1)) is None  # not in Glue
    empty = warehouse.partition_fingerprint("clicks", END_DATE)  # registered, no object landed yet

    def put(ids: list[int]) -> None:
        body = io.BytesIO()
        pq.write_table(pa.table({"impression_id": ids}), body)
        s3.put_object(Bucket=athena["bucket"], Key=key, Body=body.getvalue())

    put([1, 2])
    landed = warehouse.partition_fingerprint("clicks", END_DATE)
    assert landed not in (None, empty) and warehouse.partition_fingerprint("clicks", END_DATE) == landed
    put([1, 3])  # rewritten: a new ETag
    assert warehouse.partition_fingerprint("clicks", END_DATE) not in (None, empty, landed)
    assert submitted(athena) == []  # Glue and S3 listings only: no query, no object read


def test_a_failed_query_names_its_state_and_athenas_reason(athena):
    """moto's queries only ever succeed (or are cancelled), so Athena's FAILED answer is stubbed here."""
    from botocore.stub import Stubber

    warehouse = open_warehouse(settings())
    reason = "COLUMN_NOT_FOUND: line 1:8: Column 'clickd' cannot be resolved"
    failed = {
        "QueryExecution": {
            "QueryExecutionId": "q-1",
            "Status": {"State": "FAILED", "StateChangeReason": reason},
            "ResultConfiguration": {"OutputLocation": f"{settings().athena_output}/q-1.csv"},
        }
    }
    with Stubber(warehouse.hook.get_conn()) as stub:
        stub.add_response(
            "start_query_execution",
            {"QueryExecutionId": "q-1"},
            {
                "QueryString": "SELECT clickd FROM clicks",
                "QueryExecutionContext": {"Database": athena["database"]},
                "ResultConfiguration": {"OutputLocation": f"{settings().athena_output}/"},
                "WorkGroup": athena["workgroup"],
            },
        )
        for _ in range(3):  # the waiter, the hook's last status check, keiko's read of the reason
            stub.add_response("get_query_execution", failed, {"QueryExecutionId": "q-1"})
        with pytest.raises(KeikoError, match=rf"Athena query q-1 FAILED: {reason}"):
            warehouse.query("SELECT clickd FROM clicks")
        stub.assert_no_pending_responses()


def test_a_query_past_its_timeout_is_cancelled(athena):
    """moto's state manager holds the query QUEUED; keiko gives up after its timeout and cancels it."""
    transition = f"{athena['endpoint']}/moto-api/state-manager"
    model = {"model_name": "athena::execution"}
    requests.post(
        f"{transition}/set-transition", json={**model, "transition": {"progression": "manual", "times": 10**6}}
    )
    try:
        warehouse = AthenaWarehouse(
            athena["database"],
            output_location=settings().athena_output,
            workgroup=athena["workgroup"],
            aws_conn_id=settings().aws_conn_id,
            poll_interval=0.1,
            timeout=0.3,
        )
        with pytest.raises(KeikoError, match=r"still QUEUED after 0\.3s: cancelled it"):
            warehouse.query("SELECT 1")
    finally:
        requests.post(f"{transition}/unset-transition", json=model)
    [execution] = submitted(athena)
    assert execution["Status"]["State"] == "CANCELLED"


def test_open_warehouse_follows_keiko_warehouse_and_does_no_io(monkeypatch, keiko_home, tmp_path):
    monkeypatch.setenv("KEIKO_WAREHOUSE", "duckdb")
    assert open_warehouse(settings()).describe() == f"DuckDB over {settings().warehouse_dir}"
    monkeypatch.setenv("KEIKO_WAREHOUSE", "athena")
    monkeypatch.setenv("KEIKO_AWS_CONN_ID", "no-such-connection")  # only looked up on first use
    monkeypatch.setenv("KEIKO_ATHENA_OUTPUT", "s3://results-bucket/athena/")
    warehouse = open_warehouse(settings())
    assert isinstance(warehouse, AthenaWarehouse)
    assert (
        warehouse.describe() == "Athena database keiko (workgroup primary, results under s3://results-bucket/athena/)"
    )
    monkeypatch.delenv("KEIKO_ATHENA_OUTPUT")  # then it is under the local artifact root: not for Athena
    with pytest.raises(KeikoError, match=r"KEIKO_ATHENA_OUTPUT='file://.*only to S3"):
        open_warehouse(settings())
