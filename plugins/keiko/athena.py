"""The Athena warehouse: the rendered extract SQL runs on Amazon Athena over the Glue tables of the same names.

How results are read. Athena writes every query's result to `<OutputLocation>/<QueryExecutionId>.csv`
(a header line, every value double-quoted, NULL as an empty unquoted field). GetQueryResults returns
at most 1,000 rows a call, each value a string inside JSON: a training window of millions of rows
would be thousands of sequential calls and gigabytes of JSON parsed in Python. So keiko asks
GetQueryResults for one row only, for ResultSetMetadata (the column types), and reads the CSV from S3
(s3fs, through the same Airflow connection) with pyarrow.csv and those types: streamed GETs, parsed
in C++ on all cores. moto writes that CSV as well when a result is configured through its API, so the
tests run this path and no substitute.

Partitions: a day's data exists when the Glue table has its `dt` partition (added when the logs land,
by the loader, MSCK REPAIR TABLE or ALTER TABLE ADD PARTITION); `check_window` asks Glue for them.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from functools import cached_property
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from keiko.errors import InfrastructureError, KeikoError
from keiko.warehouse import content_fingerprint, days_between, missing_partitions_error, referenced_tables

if TYPE_CHECKING:
    from airflow.providers.amazon.aws.hooks.athena import AthenaHook

    from keiko.config import Settings

log = logging.getLogger(__name__)

# Athena (Trino) result types, as ResultSetMetadata names them, and the Arrow type each is read as.
# Timestamps: Athena's are millisecond precision (timestamp(3)); microseconds hold them exactly and are
# what DuckDB returns, so raw.parquet has one schema on both warehouses.
ATHENA_TYPES: dict[str, pa.DataType] = {
    "boolean": pa.bool_(),
    "tinyint": pa.int8(),
    "smallint": pa.int16(),
    "integer": pa.int32(),
    "int": pa.int32(),
    "bigint": pa.int64(),
    "real": pa.float32(),
    "float": pa.float32(),
    "double": pa.float64(),
    "varchar": pa.string(),
    "char": pa.string(),
    "string": pa.string(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us"),
}
READ_BLOCK_BYTES = 16 * 2**20


def arrow_type(column: dict[str, Any]) -> pa.DataType:
    """The Arrow type of one ResultSetMetadata ColumnInfo; types keiko cannot read from CSV are an error."""
    athena_type = column["Type"].lower()
    if athena_type == "decimal":
        return pa.decimal128(column["Precision"], column["Scale"])
    try:
        return ATHENA_TYPES[athena_type]
    except KeyError:
        raise KeikoError(
            f"result column {column['Name']!r} has Athena type {column['Type']!r}, which keiko cannot read; "
            f"CAST it in the SQL to one of {', '.join(sorted(ATHENA_TYPES))} or decimal"
        ) from None


def result_schema(column_info: list[dict[str, Any]]) -> pa.Schema:
    names = [column["Name"] for column in column_info]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise KeikoError(f"the query returns several columns named {', '.join(duplicates)}: give each its own alias")
    return pa.schema([(column["Name"], arrow_type(column)) for column in column_info])


def read_result_csv(source: Any, schema: pa.Schema) -> pa.Table:
    """Athena's result CSV read as `schema`: quoted "" is an empty string, an unquoted empty field is NULL."""
    import pyarrow.csv as csv

    return csv.read_csv(
        source,
        read_options=csv.ReadOptions(column_names=schema.names, skip_rows=1, block_size=READ_BLOCK_BYTES),
        parse_options=csv.ParseOptions(newlines_in_values=True),
        convert_options=csv.ConvertOptions(
            column_types=schema,
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )


class AthenaWarehouse:
    """Queries run in `workgroup` against Glue `database`; results land under `output_location` (s3://).

    Clients are made on first use: constructing one does no I/O. `timeout` bounds how long a query may
    run; a query still running then is cancelled, so a retried task does not leave it billing.
    """

    def __init__(
        self,
        database: str,
        *,
        output_location: str,
        workgroup: str = "primary",
        aws_conn_id: str = "",
        poll_interval: float = 5.0,
        timeout: float = 3600.0,
    ) -> None:
        if not output_location.startswith("s3://"):
            raise KeikoError(
                f"KEIKO_ATHENA_OUTPUT={output_location!r}: Athena writes query results only to S3; "
                "set it (or KEIKO_ARTIFACT_ROOT) to an s3:// location"
            )
        if poll_interval <= 0 or timeout <= 0:
            raise ValueError("poll_interval and timeout must be positive")
        self.database = database
        self.workgroup = workgroup
        self.output_location = output_location.rstrip("/") + "/"
        self.aws_conn_id = aws_conn_id
        self.poll_interval = poll_interval
        self.timeout = timeout

    @classmethod
    def from_settings(cls, config: Settings) -> AthenaWarehouse:
        return cls(
            config.athena_database,
            output_location=config.athena_output,
            workgroup=config.athena_workgroup,
            aws_conn_id=config.aws_conn_id,
        )

    def describe(self) -> str:
        return f"Athena database {self.database} (workgroup {self.workgroup}, results under {self.output_location})"

    @cached_property
    def hook(self) -> AthenaHook:
        from airflow.providers.amazon.aws.hooks.athena import AthenaHook

        return AthenaHook(aws_conn_id=self.aws_conn_id or None, log_query=False)

    @cached_property
    def glue(self) -> Any:
        from keiko.aws import aws_client

        return aws_client("glue", self.aws_conn_id)

    @cached_property
    def fs(self) -> Any:
        from keiko.aws import s3_filesystem

        return s3_filesystem(self.aws_conn_id)

    # -- tables and partitions (Glue) --------------------------------------------------------------

    def tables(self) -> list[str]:
        try:
            pages = self.glue.get_paginator("get_tables").paginate(DatabaseName=self.database)
            return sorted(table["Name"] for page in pages for table in page["TableList"])
        except self.glue.exceptions.EntityNotFoundException:
            raise KeikoError(f"Glue database {self.database!r} does not exist (KEIKO_ATHENA_DATABASE)") from None

    def partition_days(self, table: str, first: dt.date, last: dt.date) -> set[str] | None:
        """The `dt` values of `table`'s partitions from `first` to `last`; None if there is no such table."""
        try:
            description = self.glue.get_table(DatabaseName=self.database, Name=table)["Table"]
        except self.glue.exceptions.EntityNotFoundException:
            return None
        keys = [key["Name"] for key in description.get("PartitionKeys", [])]
        if "dt" not in keys:
            raise KeikoError(
                f"Glue table {self.database}.{table} is not partitioned by dt (partition keys: {keys or 'none'})"
            )
        if description.get("Parameters", {}).get("projection.enabled", "").lower() == "true":
            return self._projected_days(description, first, last)
        position = keys.index("dt")
        # `table` reaches Glue as a request parameter, never inside SQL; the Expression holds two dates only.
        pages = self.glue.get_paginator("get_partitions").paginate(
            DatabaseName=self.database,
            TableName=table,
            Expression=f"dt BETWEEN '{first.isoformat()}' AND '{last.isoformat()}'",
            ExcludeColumnSchema=True,
        )
        return {partition["Values"][position] for page in pages for partition in page["Partitions"]}

    def _projected_days(self, description: dict[str, Any], first: dt.date, last: dt.date) -> set[str]:
        """A table with partition projection registers no partitions in Glue: Athena computes them from the table's
        `storage.location.template` (default `<Location>/dt=<day>/`). A day is there when S3 has objects under its
        location, up to the template's first key after dt (`.../dt=${dt}/model=${model}/` looks under `dt=<day>/`)."""
        parameters = description.get("Parameters", {})
        location = description["StorageDescriptor"]["Location"].rstrip("/")
        template = parameters.get("storage.location.template") or f"{location}/dt=${{dt}}/"
        present = set()
        for day in days_between(first, last):
            prefix = template.replace("${dt}", day.isoformat()).split("${", 1)[0].rsplit("/", 1)[0]
            try:
                if self.fs.ls(prefix, refresh=True):
                    present.add(day.isoformat())
            except FileNotFoundError:
                pass
        return present

    def partition_fingerprint(self, table: str, day: dt.date) -> str | None:
        """The ETags of the objects under the day's partition locations in Glue (an S3 ETag changes when an
        object is rewritten), so no object is read to know whether a partition changed."""
        try:
            pages = self.glue.get_paginator("get_partitions").paginate(
                DatabaseName=self.database, TableName=table, Expression=f"dt = '{day.isoformat()}'"
            )
            locations = [p["StorageDescriptor"]["Location"] for page in pages for p in page["Partitions"]]
        except self.glue.exceptions.EntityNotFoundException:
            return None
        if not locations:
            return None
        objects = []
        for location in locations:
            try:
                listing = self.fs.ls(location, detail=True, refresh=True)
            except FileNotFoundError:  # a registered partition with no object under it yet: empty
                listing = []
            objects += [(i["name"], str(i.get("ETag", "")).strip('"')) for i in listing if i.get("type") == "file"]
        return content_fingerprint(objects)

    def missing_partitions(self, tables: set[str], days: list[dt.date]) -> list[str]:
        missing = []
        for table in sorted(tables):
            present = self.partition_days(table, days[0], days[-1])
            if present is None:
                missing.append(f"{table} (no such table)")
                continue
            missing.extend(f"{table}/dt={day.isoformat()}" for day in days if day.isoformat() not in present)
        return missing

    def check_window(self, sql: str, start: dt.date, end: dt.date, unchecked: frozenset[str] = frozenset()) -> None:
        missing = self.missing_partitions(referenced_tables(sql) - unchecked, days_between(start, end))
        if missing:
            raise missing_partitions_error(
                missing,
                f"Glue database {self.database}",
                start,
                end,
                "wait for the logs to land, or add the partitions (MSCK REPAIR TABLE / ALTER TABLE ADD PARTITION)",
            )

    # -- queries (Athena) --------------------------------------------------------------------------

    def start(self, sql: str) -> str:
        """Submit `sql`; its QueryExecutionId."""
        return self.hook.run_query(
            sql,
            query_context={"Database": self.database},
            result_configuration={"OutputLocation": self.output_location},
            workgroup=self.workgroup,
        )

    def wait(self, query_id: str) -> dict[str, Any]:
        """Poll until the query ends (at most `timeout`); its QueryExecution if it SUCCEEDED, else KeikoError."""
        attempts = max(1, math.ceil(self.timeout / self.poll_interval))
        self.hook.poll_query_status(query_id, max_polling_attempts=attempts, sleep_time=self.poll_interval)
        execution = self.hook.get_query_info(query_id)["QueryExecution"]
        status = execution["Status"]
        state = status["State"]
        if state in self.hook.FAILURE_STATES:
            reason = status.get("StateChangeReason") or status.get("AthenaError", {}).get("ErrorMessage")
            raise InfrastructureError(f"Athena query {query_id} {state}: {reason or 'Athena gave no reason'}")
        if state not in self.hook.SUCCESS_STATES:
            self.hook.stop_query(query_id)
            raise InfrastructureError(f"Athena query {query_id} still {state} after {self.timeout:g}s: cancelled it")
        return execution

    def read_result(self, query_id: str, execution: dict[str, Any]) -> pa.Table:
        """The result CSV of a SUCCEEDED query, typed from its ResultSetMetadata (see the module docstring)."""
        # MaxResults=1: the metadata, not the rows (those come from the CSV).
        response = self.hook.get_conn().get_query_results(QueryExecutionId=query_id, MaxResults=1)
        schema = result_schema(response["ResultSet"]["ResultSetMetadata"]["ColumnInfo"])
        # Not our output_location + id: a workgroup that enforces its own configuration moves results.
        location = execution["ResultConfiguration"]["OutputLocation"]
        try:
            size = self.fs.info(location)["size"]
        except FileNotFoundError:
            raise KeikoError(f"Athena query {query_id} SUCCEEDED but its result {location} is missing") from None
        if size == 0:  # no header line either: nothing to parse
            return schema.empty_table()
        with self.fs.open(location, "rb", block_size=READ_BLOCK_BYTES) as f:
            table = read_result_csv(f, schema)
        statistics = execution.get("Statistics", {})
        log.info(
            "Athena query %s: %s rows, %.1f MB result, %.1f MB scanned",
            query_id,
            f"{table.num_rows:,}",
            size / 1e6,
            statistics.get("DataScannedInBytes", 0) / 1e6,
        )
        return table

    def query(self, sql: str) -> pa.Table:
        query_id = self.start(sql)
        return self.read_result(query_id, self.wait(query_id))
