"""The SQLAlchemy registry backend (SQLAlchemy Core; SQLite by default, Postgres with the same code).

Versions are allocated as max+1 under a unique constraint, retried on conflict, so concurrent
registrations cannot share a number; registration is idempotent on (model, data window, artifact sha256).

Every conditional write is one statement whose WHERE is the condition (the alias's version, the lease's
token and expiry), so it holds on any SQL database without relying on isolation levels. A fenced alias move
first touches its lease row: on SQLite that takes the database's write lock, on Postgres the row's, so the
lease cannot change hands until the move commits.
"""

from __future__ import annotations

import datetime as dt
import json
from functools import cached_property
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError

from keiko.errors import RegistryError
from keiko.registry import (
    UNCONDITIONAL,
    Expected,
    Lease,
    ModelVersion,
    Registration,
    Registry,
    now_ms,
    redact,
    require_known_status,
)

metadata = MetaData()

versions = Table(
    "model_versions",
    metadata,
    Column("model", String(64), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("status", String(16), nullable=False),  # registered | rejected | historical (blessed, never deployed)
    Column("ds", String(10), nullable=False),
    Column("window_start", String(10), nullable=False),
    Column("window_end", String(10), nullable=False),
    Column("artifact_uri", String(1024), nullable=False),
    Column("artifact_sha256", String(64), nullable=False),
    Column("code_version", String(128), nullable=False),
    Column("config_sha256", String(64), nullable=False),
    Column("features_sha256", String(64), nullable=False),
    Column("algorithm", String(64), nullable=False),
    Column("metrics", JSON, nullable=False),
    Column("reason", String(1024), nullable=False, default=""),
    Column("run_id", String(256), nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("trigger", JSON, nullable=True),  # added after the first release: see _add_missing_columns
    UniqueConstraint("model", "window_start", "window_end", "artifact_sha256", name="uq_version_identity"),
)

aliases = Table(
    "model_aliases",
    metadata,
    Column("model", String(64), primary_key=True),
    Column("alias", String(32), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("previous_version", Integer, nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

alias_history = Table(
    "model_alias_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(64), nullable=False),
    Column("alias", String(32), nullable=False),
    Column("from_version", Integer, nullable=True),
    Column("to_version", Integer, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("note", String(1024), nullable=False, default=""),
)


leases = Table(
    "model_leases",
    metadata,
    Column("model", String(64), primary_key=True),
    Column("holder", String(1024), nullable=False),
    Column("token", String(64), nullable=False),
    Column("acquired_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
)


def _check_url(url: str) -> None:
    """A clear error now for a URL SQLAlchemy cannot parse or has no dialect for (no connection is made)."""
    try:
        make_url(url).get_dialect()
    except (ArgumentError, NoSuchModuleError) as error:
        raise RegistryError(
            f"registry URL {redact(url)!r} is neither dynamodb://<table> nor a usable SQLAlchemy URL: {error}"
        ) from error


def _add_missing_columns(engine: Engine) -> None:
    """Add the nullable columns a registry created by an earlier keiko lacks (create_all only makes
    missing tables). A migration tool would be more than one nullable column needs."""
    existing = {column["name"] for column in inspect(engine).get_columns(versions.name)}
    with engine.begin() as conn:
        for column in versions.columns:
            if column.name not in existing and column.nullable:
                kind = column.type.compile(dialect=engine.dialect)
                conn.execute(text(f'ALTER TABLE {versions.name} ADD COLUMN "{column.name}" {kind}'))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _row_to_version(row: Any) -> ModelVersion:
    data = dict(row._mapping)
    data["created_at"] = data["created_at"].isoformat()
    for name in ("metrics", "trigger"):
        if isinstance(data[name], str):
            data[name] = json.loads(data[name])
    data["trigger"] = data["trigger"] or {}
    return ModelVersion(**data)


class SqlRegistry(Registry):
    """The registry in three tables of a SQL database (model_versions, model_aliases, model_alias_history)."""

    def __init__(self, url: str) -> None:
        self.url = url
        _check_url(url)

    def __repr__(self) -> str:
        return f"SqlRegistry({redact(self.url)!r})"

    @cached_property
    def engine(self) -> Engine:
        engine = create_engine(self.url)
        if engine.dialect.name == "sqlite":
            if engine.url.database and engine.url.database != ":memory:":
                Path(engine.url.database).parent.mkdir(parents=True, exist_ok=True)

            # Concurrent writers (parallel DAG runs, the CLI) wait for the lock instead of failing.
            @event.listens_for(engine, "connect")
            def _sqlite_pragmas(dbapi_connection, _record):
                cursor = dbapi_connection.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA busy_timeout=30000")
                cursor.close()

        metadata.create_all(engine)
        _add_missing_columns(engine)
        return engine

    def register(
        self,
        *,
        model: str,
        ds: str,
        window_start: str,
        window_end: str,
        artifact_uri: str,
        artifact_sha256: str,
        code_version: str,
        config_sha256: str,
        features_sha256: str,
        algorithm: str,
        metrics: dict[str, Any],
        status: str = "registered",
        reason: str = "",
        run_id: str = "",
        trigger: dict[str, Any] | None = None,
    ) -> Registration:
        require_known_status(status)
        identity = (
            (versions.c.model == model)
            & (versions.c.window_start == window_start)
            & (versions.c.window_end == window_end)
            & (versions.c.artifact_sha256 == artifact_sha256)
        )
        for _attempt in range(20):
            with self.engine.begin() as conn:
                existing = conn.execute(select(versions).where(identity)).first()
                if existing is not None:
                    return Registration(_row_to_version(existing), created=False)
                next_version = (
                    conn.execute(
                        select(func.coalesce(func.max(versions.c.version), 0)).where(versions.c.model == model)
                    ).scalar_one()
                    + 1
                )
                try:
                    conn.execute(
                        insert(versions).values(
                            model=model,
                            version=next_version,
                            status=status,
                            ds=ds,
                            window_start=window_start,
                            window_end=window_end,
                            artifact_uri=artifact_uri,
                            artifact_sha256=artifact_sha256,
                            code_version=code_version,
                            config_sha256=config_sha256,
                            features_sha256=features_sha256,
                            algorithm=algorithm,
                            metrics=metrics,
                            reason=reason,
                            run_id=run_id,
                            created_at=_now(),
                            trigger=trigger or {},
                        )
                    )
                except IntegrityError:
                    continue  # another writer took this number (or this identity): look again
            return Registration(self.get(model, next_version), created=True)
        raise RegistryError(f"could not allocate a version for {model} after 20 attempts")

    def get(self, model: str, version: int) -> ModelVersion:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(versions).where((versions.c.model == model) & (versions.c.version == version))
            ).first()
        if row is None:
            raise RegistryError(f"{model} has no version {version}")
        return _row_to_version(row)

    def list(self, model: str) -> list[ModelVersion]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(versions).where(versions.c.model == model).order_by(versions.c.version))
            return [_row_to_version(r) for r in rows]

    def alias(self, model: str, alias: str = "production") -> int | None:
        with self.engine.connect() as conn:
            return conn.execute(
                select(aliases.c.version).where((aliases.c.model == model) & (aliases.c.alias == alias))
            ).scalar_one_or_none()

    def aliases_of(self, model: str) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(aliases.c.alias, aliases.c.version).where(aliases.c.model == model))
            return {alias: version for alias, version in rows}

    def move_alias(
        self,
        model: str,
        version: int,
        *,
        alias: str = "production",
        expected: Expected = UNCONDITIONAL,
        note: str = "",
        lease: Lease | None = None,
    ) -> int | None:
        target = self.get(model, version)
        if target.status != "registered":
            raise RegistryError(f"{model} v{version} is {target.status}, it cannot become {alias}")
        try:
            with self.engine.begin() as conn:
                if lease is not None:
                    self._hold(conn, lease)  # first, so the lease cannot change hands before this commits
                key = (aliases.c.model == model) & (aliases.c.alias == alias)
                current = conn.execute(select(aliases.c.version).where(key)).scalar_one_or_none()
                if expected is not UNCONDITIONAL and current != expected:
                    raise RegistryError(f"{model} {alias} is v{current}, expected v{expected}: moved concurrently")
                if current is None:  # a concurrent first move makes this insert fail on the primary key
                    conn.execute(insert(aliases).values(model=model, alias=alias, version=version, updated_at=_now()))
                elif current != version:
                    result = conn.execute(
                        update(aliases)
                        .where(key & (aliases.c.version == current))
                        .values(version=version, previous_version=current, updated_at=_now())
                    )
                    if result.rowcount != 1:
                        raise RegistryError(f"{model} {alias} moved concurrently; retry")
                if current != version:
                    conn.execute(
                        insert(alias_history).values(
                            model=model, alias=alias, from_version=current, to_version=version, at=_now(), note=note
                        )
                    )
        except IntegrityError:
            raise RegistryError(
                f"{model} {alias} was first set by another writer at the same time: moved concurrently; "
                f"not moved to v{version}"
            ) from None
        return current

    def previous(self, model: str, alias: str = "production") -> int | None:
        with self.engine.connect() as conn:
            return conn.execute(
                select(aliases.c.previous_version).where((aliases.c.model == model) & (aliases.c.alias == alias))
            ).scalar_one_or_none()

    def history(self, model: str, alias: str = "production") -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(alias_history)
                .where((alias_history.c.model == model) & (alias_history.c.alias == alias))
                .order_by(alias_history.c.id)
            )
            return [{**dict(r._mapping), "at": r.at.isoformat()} for r in rows]

    # --- leases ---

    def _take_lease(self, lease: Lease) -> bool:
        values = {k: getattr(lease, k) for k in ("holder", "token", "acquired_ms", "expires_ms")}
        with self.engine.begin() as conn:  # an expired lease is taken over in place
            expired = (leases.c.model == lease.model) & (leases.c.expires_ms <= lease.acquired_ms)
            if conn.execute(update(leases).where(expired).values(**values)).rowcount == 1:
                return True
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(leases).values(model=lease.model, **values))
        except IntegrityError:
            return False  # there is a lease row, unexpired when the update looked
        return True

    def renew_lease(self, lease: Lease, seconds: float) -> Lease:
        now = now_ms()
        renewed = Lease(lease.model, lease.holder, lease.token, lease.acquired_ms, now + int(seconds * 1000))
        with self.engine.begin() as conn:
            result = conn.execute(update(leases).where(self._held_by(lease, now)).values(expires_ms=renewed.expires_ms))
        if result.rowcount != 1:
            raise self.lost(lease)
        return renewed

    def release_lease(self, lease: Lease) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(leases).where((leases.c.model == lease.model) & (leases.c.token == lease.token)))

    def current_lease(self, model: str) -> Lease | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(leases).where((leases.c.model == model) & (leases.c.expires_ms > now_ms()))
            ).first()
        return None if row is None else Lease(**row._mapping)

    @staticmethod
    def _held_by(lease: Lease, now: int):
        return (leases.c.model == lease.model) & (leases.c.token == lease.token) & (leases.c.expires_ms > now)

    def _hold(self, conn: Any, lease: Lease) -> None:
        """Inside a transaction: LeaseLost unless `lease` is held; holds the lease row until commit."""
        touched = conn.execute(
            update(leases).where(self._held_by(lease, now_ms())).values(expires_ms=leases.c.expires_ms)
        )
        if touched.rowcount != 1:
            raise self.lost(lease)
