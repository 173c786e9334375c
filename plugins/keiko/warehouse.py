"""The warehouse: extract SQL rendered for a run's data window and run on DuckDB over Parquet, or on Athena.

The SQL names plain tables (impressions, clicks, ...). Here they are DuckDB views over the
`dt=` partitions; on Athena (keiko.athena) they are the Glue tables of the same names, so one
template serves both.
"""

from __future__ import annotations

import datetime as dt
import glob
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pyarrow as pa

from keiko.errors import KeikoError, MissingDataError
from keiko.modeldef import IDENTIFIER

if TYPE_CHECKING:
    from keiko.config import Settings
    from keiko.modeldef import ModelDefinition

SQL_DIALECT = "trino"  # templates must parse as Trino (Athena) and run on DuckDB


def data_window(ds: dt.date, window_days: int) -> tuple[dt.date, dt.date]:
    """The run for day `ds` uses the `window_days` days ending with `ds` (inclusive)."""
    return ds - dt.timedelta(days=window_days - 1), ds


def render_sql(path: Path, *, ds: dt.date, window_days: int, model: str, what: str = "extract") -> str:
    """A model's SQL of a run (`what`: extract, or a batch model's keys) for the run of day `ds`."""
    start, end = data_window(ds, window_days)
    return _render(
        path, what, ds=ds.isoformat(), window_start=start.isoformat(), window_end=end.isoformat(), model=model
    )


def render_monitor_sql(path: Path, *, day: dt.date, model: str, inputs: list[str]) -> str:
    """A model's monitor SQL for day `day`; `inputs` are the model's input fields (they are SQL: identifiers)."""
    for column in inputs:
        if not IDENTIFIER.fullmatch(column):
            raise KeikoError(f"{path}: input field {column!r} cannot be named in SQL unquoted")
    served_from = min(day, dt.datetime.now(dt.UTC).date())
    return _render(
        path, "monitor", day=day.isoformat(), served_from=served_from.isoformat(), model=model, inputs=inputs
    )


def _render(path: Path, what: str, **variables: object) -> str:
    import jinja2

    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    try:
        return environment.from_string(path.read_text()).render(**variables)
    except FileNotFoundError:
        raise KeikoError(f"{what} SQL not found: {path}") from None
    except jinja2.TemplateError as exc:
        raise KeikoError(f"{path}: cannot render: {exc}") from None


def referenced_tables(sql: str) -> set[str]:
    import sqlglot
    from sqlglot import exp

    try:
        tree = sqlglot.parse_one(sql, read=SQL_DIALECT)
    except sqlglot.errors.ParseError as exc:
        raise KeikoError(f"extract SQL does not parse as {SQL_DIALECT}: {exc}") from None
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    return {t.name for t in tree.find_all(exp.Table)} - ctes


def columns_read(sql: str) -> dict[str, set[str]]:
    """Each warehouse table the SQL reads, with the columns it reads of it (CTEs resolved to their tables)."""
    import sqlglot
    from sqlglot import exp
    from sqlglot.optimizer.qualify import qualify
    from sqlglot.optimizer.scope import traverse_scope

    try:
        tree = qualify(sqlglot.parse_one(sql, read=SQL_DIALECT), dialect=SQL_DIALECT, validate_qualify_columns=False)
    except sqlglot.errors.SqlglotError as exc:
        raise KeikoError(f"extract SQL does not parse as {SQL_DIALECT}: {exc}") from None
    read: dict[str, set[str]] = {}
    for scope in traverse_scope(tree):
        selected = {alias: source for alias, (_, source) in scope.selected_sources.items()}
        only = next(iter(selected.values())) if len(selected) == 1 else None
        for column in scope.columns:
            source = selected.get(column.table) if column.table else only  # one source: names left unqualified
            if isinstance(source, exp.Table):
                read.setdefault(source.name, set()).add(column.name)
    return read


def content_fingerprint(parts: list[tuple[str, str]]) -> str:
    """One sha256 over (name, digest) pairs: a partition's files, or its objects' ETags."""
    import hashlib

    return hashlib.sha256("\n".join(f"{name} {digest}" for name, digest in sorted(parts)).encode()).hexdigest()


def days_between(start: dt.date, end: dt.date) -> list[dt.date]:
    """Every day from `start` to `end`, both included."""
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def describe_partitions(partitions: list[str], shown: int = 5) -> str:
    """The first `shown` `table/dt=day` partitions, and how many more: short enough for one log line."""
    more = len(partitions) - shown
    return ", ".join(partitions[:shown]) + (f" and {more} more" if more > 0 else "")


def missing_partitions_error(
    missing: list[str], where: str, start: dt.date, end: dt.date, hint: str
) -> MissingDataError:
    """One message naming the first missing `table/dt=day` partitions, the same on every warehouse."""
    return MissingDataError(
        f"missing warehouse partitions in {where}: {describe_partitions(missing)} (data window {start}..{end}; {hint})"
    )


def window_tables(model: ModelDefinition, ds: dt.date) -> tuple[set[str], dt.date, dt.date]:
    """What the run of `ds` reads: the tables its extract SQL names, and its data window's first and last day;
    the partitions extract's check_window demands and wait_for_data waits for."""
    start, end = data_window(ds, model.config.window_days)
    sql = render_sql(model.sql_path, ds=ds, window_days=model.config.window_days, model=model.name)
    return referenced_tables(sql), start, end


# -- table folders ---------------------------------------------------------------------------------------
# Each folder directly under a DuckDB warehouse is a table, named by the folder, unless it is ignored:
# - hidden ones, starting with "." or "_" (Hive, Spark and Arrow datasets skip them: `.git`, `_temporary`);
# - `lost+found`, which fsck keeps at the root of a filesystem;
# - folders with no `dt=*/*.parquet` partition yet (not a table until data lands; SQL that reads one is
#   told its partitions are missing, by check_window).
# A partition's files are directly in its `dt=<day>` folder, or one Hive key further down, as the prediction
# log writes them (`dt=<day>/model=<name>/`); nothing deeper, so a writer's `_temporary/` is never read.
# Any other folder must be named as the SQL can name it, unquoted, on DuckDB and on Athena alike: lowercase
# letters, digits and underscores, starting with a letter, at most 255 (Glue's limit). Otherwise extract is
# refused with one line naming the folder, before any SQL runs. Names are quoted in the SQL all the same.
IGNORED_FOLDERS = frozenset({"lost+found"})
PARTITION_FILES = ("*.parquet", "*=*/*.parquet")  # a `dt=<day>` folder's data, as globs relative to it


def is_ignored_folder(name: str) -> bool:
    return name.startswith((".", "_")) or name in IGNORED_FOLDERS


def table_name(folder: Path) -> str:
    """The table `folder` holds, named by the folder; KeikoError naming it if SQL could not name it."""
    if not IDENTIFIER.fullmatch(folder.name):
        raise KeikoError(
            f"warehouse folder {folder.name!r} in {folder.parent} is not a table name (lowercase letters, digits "
            "and _, starting with a letter): rename it, or move it out of the warehouse"
        )
    return folder.name


def quote_identifier(name: str) -> str:
    """`name` as a double-quoted identifier (DuckDB, Trino): never read as SQL, whatever it contains."""
    return '"' + name.replace('"', '""') + '"'


def quote_string(text: str) -> str:
    """`text` as a SQL string literal (DuckDB's have no backslash escapes: only ' is doubled)."""
    return "'" + text.replace("'", "''") + "'"


def partition_files(partition: Path) -> list[Path]:
    """The Parquet files of one `dt=<day>` partition folder."""
    return sorted(path for pattern in PARTITION_FILES for path in partition.glob(pattern))


def has_partitions(table_folder: Path) -> bool:
    return any(partition_files(partition) for partition in table_folder.glob("dt=*"))


def partition_globs(table_folder: Path) -> list[str]:
    """The globs of `table_folder`'s partition files that match any (DuckDB refuses a glob matching none);
    glob characters in the path itself match only themselves."""
    root = glob.escape(table_folder.as_posix())
    return [f"{root}/dt=*/{p}" for p in PARTITION_FILES if any(table_folder.glob(f"dt=*/{p}"))]


def view_sql(table: str, table_folder: Path) -> str:
    """The DuckDB view of a table over its partitions."""
    # union_by_name reads partitions as Athena reads a Glue table: a column missing from a
    # partition is NULL there, so gate_raw names it instead of extract failing on the schema.
    files = "[" + ", ".join(quote_string(g) for g in partition_globs(table_folder)) + "]"
    return (
        f"CREATE VIEW {quote_identifier(table)} AS SELECT * FROM read_parquet({files}, "
        "hive_partitioning = true, hive_types = {'dt': VARCHAR}, union_by_name = true)"
    )


class Warehouse(Protocol):
    def describe(self) -> str:
        """Where the SQL runs, for the log: a line an on-call person can act on."""
        ...

    def tables(self) -> list[str]: ...
    def query(self, sql: str) -> pa.Table: ...
    def partition_fingerprint(self, table: str, day: dt.date) -> str | None:
        """What a partition holds, as a digest that changes when its data does; None when it is absent."""
        ...

    def check_window(self, sql: str, start: dt.date, end: dt.date, unchecked: frozenset[str] = frozenset()) -> None:
        """Every table `sql` reads (but `unchecked`) has a partition for every day from `start` to `end`;
        MissingDataError naming the first missing ones otherwise."""
        ...


class DuckDBWarehouse:
    """Parquet partitions `<dir>/<table>/dt=YYYY-MM-DD/*.parquet`, queried through DuckDB views."""

    def __init__(self, directory: Path, *, memory_limit: str = "3GB", threads: int | None = None) -> None:
        self.directory = directory
        self.memory_limit = memory_limit
        self.threads = threads

    def describe(self) -> str:
        return f"DuckDB over {self.directory}"

    def tables(self) -> list[str]:
        """The tables under the directory (see "table folders" above); KeikoError for a misnamed folder."""
        if not self.directory.is_dir():
            return []
        folders = [p for p in sorted(self.directory.iterdir()) if p.is_dir() and not is_ignored_folder(p.name)]
        names = [table_name(folder) for folder in folders]  # every folder checked, with data or not yet
        return sorted(name for name in names if has_partitions(self.directory / name))

    def missing_partitions(self, tables: set[str], days: list[dt.date]) -> list[str]:
        missing = []
        for table in sorted(tables):
            for day in days:
                partition = self.directory / table / f"dt={day.isoformat()}"
                if not partition_files(partition):
                    missing.append(f"{table}/dt={day.isoformat()}")
        return missing

    def partition_fingerprint(self, table: str, day: dt.date) -> str | None:
        import hashlib

        partition = self.directory / table / f"dt={day.isoformat()}"
        files = partition_files(partition)
        if not files:
            return None
        digests = []
        for path in files:
            with path.open("rb") as f:
                digests.append((path.relative_to(partition).as_posix(), hashlib.file_digest(f, "sha256").hexdigest()))
        return content_fingerprint(digests)

    @cached_property
    def connection(self):
        import duckdb

        connection = duckdb.connect(config={"memory_limit": self.memory_limit})
        if self.threads:
            connection.execute(f"SET threads = {int(self.threads)}")
        for table in self.tables():
            connection.execute(view_sql(table, self.directory / table))
        return connection

    def query(self, sql: str) -> pa.Table:
        return self.connection.sql(sql).to_arrow_table()

    def check_window(self, sql: str, start: dt.date, end: dt.date, unchecked: frozenset[str] = frozenset()) -> None:
        missing = self.missing_partitions(referenced_tables(sql) - unchecked, days_between(start, end))
        if missing:
            raise missing_partitions_error(
                missing, str(self.directory), start, end, "run `keiko synth` or wait for the logs to land"
            )


def open_warehouse(config: Settings) -> Warehouse:
    """The warehouse KEIKO_WAREHOUSE names: DuckDB over KEIKO_WAREHOUSE_DIR, or Athena over Glue."""
    if config.warehouse == "athena":
        from keiko.athena import AthenaWarehouse

        return AthenaWarehouse.from_settings(config)
    return DuckDBWarehouse(config.warehouse_dir)
