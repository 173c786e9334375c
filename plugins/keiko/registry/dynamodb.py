"""The DynamoDB registry backend: one table (`pk`, `sk`), every item of a model in the model's partition.

Items, all with pk = `MODEL#<model>`:

    sk VERSION#<version, 10 digits>                             a version; metrics as a JSON string
    sk IDENTITY#<window_start>#<window_end>#<artifact_sha256>   a version's identity -> its number
    sk ALIAS#<alias>                                            version, previous_version, moves (a counter)
    sk HISTORY#<alias>#<move, 10 digits>                        one move of the alias
    sk LEASE                                                    holder, token, acquired_ms, expires_ms

Zero-padded numbers sort as strings, so "the highest version" and "the history in order" are Queries.
Key parts that come from callers are percent-encoded, so a `#` in them cannot make two keys collide.

Whatever must be atomic is one TransactWriteItems with conditions (DynamoDB serializes transactions
that touch the same item):
- register Puts the version item and the identity item, both `attribute_not_exists(pk)`. A taken
  identity is a retry (the existing version is returned); a taken number is a concurrent registration
  (the highest number is read again and the next one tried).
- move_alias Updates the alias item conditioned on the version and move counter it read, checks that
  the target is `registered`, and Puts the history item numbered by the new counter; fenced by a lease,
  it also checks that the lease item still has the holder's token and has not expired.
A lease is one item written with a conditional put (absent, or expired) and renewed or deleted with a
condition on its token.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import threading
from collections.abc import Iterator
from functools import cached_property
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from botocore.exceptions import ClientError

from keiko.aws import back_off, dynamodb_client, ready_dynamodb_table
from keiko.errors import RegistryError
from keiko.registry import (
    UNCONDITIONAL,
    Expected,
    Lease,
    ModelVersion,
    Registration,
    Registry,
    now_ms,
    require_known_status,
)

Item = dict[str, dict[str, Any]]  # a DynamoDB item in the low-level client's typed form ({"S": ...})

NUMBER_WIDTH = 10  # zero padding of numbers in sort keys
MAX_REGISTER_ATTEMPTS = 20  # as many as SqlRegistry
MAX_MOVE_ATTEMPTS = 5  # only TransactionConflict/throttling retries: a lost race is an error, not a retry
CONDITION_FAILED = "ConditionalCheckFailed"
# Cancellation reasons that say nothing about the data: another transaction held an item, or throughput.
TRANSIENT_CANCELLATIONS = frozenset({"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"})
TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}")  # DynamoDB's rule for table names
_VERSION_STRINGS = tuple(
    f.name for f in dataclasses.fields(ModelVersion) if f.name not in ("version", "metrics", "trigger")
)


# --- keys and items (pure functions: tests/unit/registry/test_dynamodb_items.py) ---


def _part(value: str) -> str:
    return quote(value, safe="")


def _number(value: int) -> str:
    if not 0 <= value < 10**NUMBER_WIDTH:
        raise RegistryError(f"{value} does not fit a {NUMBER_WIDTH}-digit sort key")
    return f"{value:0{NUMBER_WIDTH}d}"


def partition_key(model: str) -> str:
    return f"MODEL#{model}"


VERSION_PREFIX = "VERSION#"
ALIAS_PREFIX = "ALIAS#"
LEASE_SK = "LEASE"


def version_sk(version: int) -> str:
    return f"{VERSION_PREFIX}{_number(version)}"


def identity_sk(*, window_start: str, window_end: str, artifact_sha256: str) -> str:
    return f"IDENTITY#{_part(window_start)}#{_part(window_end)}#{_part(artifact_sha256)}"


def alias_sk(alias: str) -> str:
    return f"{ALIAS_PREFIX}{_part(alias)}"


def history_prefix(alias: str) -> str:
    return f"HISTORY#{_part(alias)}#"


def history_sk(alias: str, move: int) -> str:
    return f"{history_prefix(alias)}{_number(move)}"


def item_key(model: str, sk: str) -> Item:
    return {"pk": {"S": partition_key(model)}, "sk": {"S": sk}}


def encode_version(version: ModelVersion) -> Item:
    return {
        **item_key(version.model, version_sk(version.version)),
        **{name: {"S": getattr(version, name)} for name in _VERSION_STRINGS},
        "version": {"N": str(version.version)},
        # DynamoDB numbers reject Python floats (boto wants Decimal) and would round-trip as Decimal:
        # a JSON string reads back exactly what was written.
        "metrics": {"S": json.dumps(version.metrics)},
        "trigger": {"S": json.dumps(version.trigger)},
    }


def decode_version(item: Item) -> ModelVersion:
    return ModelVersion(
        **{name: item[name]["S"] for name in _VERSION_STRINGS},
        version=int(item["version"]["N"]),
        metrics=json.loads(item["metrics"]["S"]),
        trigger=json.loads(item["trigger"]["S"]) if "trigger" in item else {},  # items from before it existed
    )


def encode_identity(*, model: str, sk: str, version: int) -> Item:
    return {**item_key(model, sk), "model": {"S": model}, "version": {"N": str(version)}}


def encode_history(
    *, model: str, alias: str, move: int, from_version: int | None, to_version: int, at: str, note: str
) -> Item:
    item: Item = {
        **item_key(model, history_sk(alias, move)),
        "model": {"S": model},
        "alias": {"S": alias},
        "move": {"N": str(move)},
        "to_version": {"N": str(to_version)},
        "at": {"S": at},
        "note": {"S": note},
    }
    if from_version is not None:  # the first move has none: the attribute is absent
        item["from_version"] = {"N": str(from_version)}
    return item


def decode_history(item: Item) -> dict[str, Any]:
    """As SqlRegistry.history's rows; `id` is the alias's move number (1, 2, ...)."""
    return {
        "id": int(item["move"]["N"]),
        "model": item["model"]["S"],
        "alias": item["alias"]["S"],
        "from_version": optional_number(item, "from_version"),
        "to_version": int(item["to_version"]["N"]),
        "at": item["at"]["S"],
        "note": item["note"]["S"],
    }


def encode_lease(lease: Lease) -> Item:
    return {
        **item_key(lease.model, LEASE_SK),
        "holder": {"S": lease.holder},
        "token": {"S": lease.token},
        "acquired_ms": {"N": str(lease.acquired_ms)},
        "expires_ms": {"N": str(lease.expires_ms)},
    }


def decode_lease(model: str, item: Item) -> Lease:
    return Lease(
        model=model,
        holder=item["holder"]["S"],
        token=item["token"]["S"],
        acquired_ms=int(item["acquired_ms"]["N"]),
        expires_ms=int(item["expires_ms"]["N"]),
    )


def optional_number(item: Item | None, name: str) -> int | None:
    if item is None or name not in item:
        return None
    return int(item[name]["N"])


def parse_url(url: str) -> tuple[str, str | None]:
    """(table, region) of `dynamodb://<table>[?region=<region>]`; RegistryError naming `url` otherwise."""
    parts = urlsplit(url)
    usage = "expected dynamodb://<table>[?region=<region>]"
    if parts.scheme != "dynamodb" or parts.path not in ("", "/") or parts.fragment:
        raise RegistryError(f"registry URL {url!r}: {usage}")
    if not TABLE_NAME.fullmatch(parts.netloc):
        raise RegistryError(
            f"registry URL {url!r}: {parts.netloc!r} is not a DynamoDB table name "
            "(3 to 255 letters, digits, '_', '-' or '.'); " + usage
        )
    query = parse_qs(parts.query, keep_blank_values=True)
    if unknown := sorted(set(query) - {"region"}):
        raise RegistryError(f"registry URL {url!r}: unknown parameter {', '.join(unknown)}; {usage}")
    regions = query.get("region", [])
    if len(regions) > 1 or (regions and not regions[0]):
        raise RegistryError(f"registry URL {url!r}: region must be given once, not empty; {usage}")
    return parts.netloc, (regions[0] if regions else None)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


class DynamoDBRegistry(Registry):
    """The registry in one DynamoDB table, created (PAY_PER_REQUEST) on first use if missing.

    Credentials, region and endpoint come from the Airflow AWS connection `aws_conn_id` (default:
    KEIKO_AWS_CONN_ID; empty: boto's default chain); `region` overrides the connection's. Nothing is
    read or created until the first operation. One instance may be shared by threads.
    """

    def __init__(self, table: str, *, region: str | None = None, aws_conn_id: str | None = None) -> None:
        if not TABLE_NAME.fullmatch(table):
            raise RegistryError(f"{table!r} is not a DynamoDB table name (3 to 255 letters, digits, '_', '-' or '.')")
        self.table = table
        self.region = region
        self._aws_conn_id = aws_conn_id  # None: settings().aws_conn_id, read when the client is made
        self._table_ready = False
        self._table_lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str) -> DynamoDBRegistry:
        table, region = parse_url(url)
        return cls(table, region=region)

    def __repr__(self) -> str:
        return f"DynamoDBRegistry({self.table!r}, region={self.region!r})"

    @cached_property
    def client(self) -> Any:
        return dynamodb_client(self._aws_conn_id, self.region)

    # --- the table ---

    def _ensure_table(self) -> None:
        if self._table_ready:
            return
        with self._table_lock:
            if not self._table_ready:
                keys = {"pk": "HASH", "sk": "RANGE"}
                ready_dynamodb_table(self.client, self.table, keys, user="the registry", error=RegistryError)
                self._table_ready = True

    # --- reads and writes ---

    def _get_item(self, model: str, sk: str) -> Item | None:
        self._ensure_table()
        return self.client.get_item(TableName=self.table, Key=item_key(model, sk), ConsistentRead=True).get("Item")

    def _query(self, model: str, prefix: str, *, descending: bool = False, limit: int | None = None) -> Iterator[Item]:
        """Items of `model` whose sk starts with `prefix`, in sk order (strongly consistent)."""
        self._ensure_table()
        request: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": {":pk": {"S": partition_key(model)}, ":prefix": {"S": prefix}},
            "ConsistentRead": True,
            "ScanIndexForward": not descending,
        }
        if limit is not None:
            yield from self.client.query(**request, Limit=limit).get("Items", [])
            return
        for page in self.client.get_paginator("query").paginate(**request):
            yield from page.get("Items", [])

    def _transact(self, actions: list[dict[str, Any]]) -> list[str] | None:
        """Run one TransactWriteItems: None if it committed, else each action's cancellation code, in order
        ("None" for an action that was fine)."""
        self._ensure_table()
        try:
            self.client.transact_write_items(TransactItems=actions)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "TransactionCanceledException":
                raise
            codes = [reason.get("Code") or "None" for reason in error.response.get("CancellationReasons", [])]
            if len(codes) != len(actions):
                raise RegistryError(
                    f"DynamoDB table {self.table}: transaction cancelled without reasons: {error}"
                ) from error
            return codes
        return None

    def _put_new(self, item: Item) -> dict[str, Any]:
        return {"Put": {"TableName": self.table, "Item": item, "ConditionExpression": "attribute_not_exists(pk)"}}

    # --- versions ---

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
        identity = identity_sk(window_start=window_start, window_end=window_end, artifact_sha256=artifact_sha256)
        for attempt in range(MAX_REGISTER_ATTEMPTS):
            if (existing := self._registration_of(model, identity)) is not None:
                return existing
            candidate = ModelVersion(
                model=model,
                version=self._highest_version(model) + 1,
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
            codes = self._transact(
                [
                    self._put_new(encode_version(candidate)),
                    self._put_new(encode_identity(model=model, sk=identity, version=candidate.version)),
                ]
            )
            if codes is None:
                return Registration(candidate, created=True)
            version_code, identity_code = codes
            if identity_code == CONDITION_FAILED and (existing := self._registration_of(model, identity)):
                return existing  # a concurrent registration of the same identity won
            if version_code == CONDITION_FAILED:
                continue  # another registration took this number: read the highest again
            if TRANSIENT_CANCELLATIONS.intersection(codes):
                back_off(attempt)
                continue
            raise RegistryError(f"could not register {model} v{candidate.version}: transaction cancelled ({codes})")
        raise RegistryError(f"could not allocate a version for {model} after {MAX_REGISTER_ATTEMPTS} attempts")

    def _registration_of(self, model: str, identity: str) -> Registration | None:
        item = self._get_item(model, identity)
        if item is None:
            return None
        return Registration(self.get(model, int(item["version"]["N"])), created=False)

    def _highest_version(self, model: str) -> int:
        newest = next(self._query(model, VERSION_PREFIX, descending=True, limit=1), None)
        return 0 if newest is None else int(newest["version"]["N"])

    def get(self, model: str, version: int) -> ModelVersion:
        item = self._get_item(model, version_sk(version)) if 0 <= version < 10**NUMBER_WIDTH else None
        if item is None:
            raise RegistryError(f"{model} has no version {version}")
        return decode_version(item)

    def list(self, model: str) -> list[ModelVersion]:
        return [decode_version(item) for item in self._query(model, VERSION_PREFIX)]

    # --- aliases ---

    def alias(self, model: str, alias: str = "production") -> int | None:
        return optional_number(self._get_item(model, alias_sk(alias)), "version")

    def aliases_of(self, model: str) -> dict[str, int]:
        return {item["alias"]["S"]: int(item["version"]["N"]) for item in self._query(model, ALIAS_PREFIX)}

    def previous(self, model: str, alias: str = "production") -> int | None:
        return optional_number(self._get_item(model, alias_sk(alias)), "previous_version")

    def history(self, model: str, alias: str = "production") -> list[dict[str, Any]]:
        return [decode_history(item) for item in self._query(model, history_prefix(alias))]

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
        self._require_deployable(model, version, alias)
        for attempt in range(MAX_MOVE_ATTEMPTS):
            current_item = self._get_item(model, alias_sk(alias))
            current = optional_number(current_item, "version")
            moves = optional_number(current_item, "moves") or 0
            if expected is not UNCONDITIONAL and current != expected:
                raise RegistryError(f"{model} {alias} is v{current}, expected v{expected}: moved concurrently")
            if current == version:
                return current  # already there: no move, no history
            now = _now()
            fence = [] if lease is None else [self._lease_check(lease)]
            codes = self._transact(
                [
                    *fence,
                    self._alias_update(model, alias, version, current=current, moves=moves, now=now),
                    {
                        "ConditionCheck": {
                            "TableName": self.table,
                            "Key": item_key(model, version_sk(version)),
                            "ConditionExpression": "attribute_exists(pk) AND #status = :registered",
                            "ExpressionAttributeNames": {"#status": "status"},
                            "ExpressionAttributeValues": {":registered": {"S": "registered"}},
                        }
                    },
                    self._put_new(
                        encode_history(
                            model=model,
                            alias=alias,
                            move=moves + 1,
                            from_version=current,
                            to_version=version,
                            at=now,
                            note=note,
                        )
                    ),
                ]
            )
            if codes is None:
                return current
            if fence and codes[0] == CONDITION_FAILED:
                raise self.lost(lease)
            alias_code, target_code, history_code = codes[len(fence) :]
            if target_code == CONDITION_FAILED:
                self._require_deployable(model, version, alias)  # says why, if it can
                raise RegistryError(f"{model} v{version} is no longer registered, it cannot become {alias}")
            if CONDITION_FAILED in (alias_code, history_code):
                now_at = self.alias(model, alias)
                raise RegistryError(
                    f"{model} {alias} moved concurrently (v{current} when read, v{now_at} now): not moved to v{version}"
                )
            if TRANSIENT_CANCELLATIONS.intersection(codes):
                back_off(attempt)
                continue
            raise RegistryError(f"could not move {model} {alias} to v{version}: transaction cancelled ({codes})")
        raise RegistryError(
            f"could not move {model} {alias} to v{version}: {MAX_MOVE_ATTEMPTS} transactions conflicted; retry"
        )

    def _require_deployable(self, model: str, version: int, alias: str) -> None:
        target = self.get(model, version)
        if target.status != "registered":
            raise RegistryError(f"{model} v{version} is {target.status}, it cannot become {alias}")

    def _alias_update(
        self, model: str, alias: str, version: int, *, current: int | None, moves: int, now: str
    ) -> dict[str, Any]:
        """The Update that moves the alias, valid only if nobody moved it since it was read.

        The condition is on the move counter too: a move away and back (v1 -> v2 -> v1) leaves the
        version as read but not the history numbering.
        """
        names = {
            "#model": "model",
            "#alias": "alias",
            "#version": "version",
            "#updated_at": "updated_at",
            "#moves": "moves",
        }
        values: dict[str, Any] = {
            ":model": {"S": model},
            ":alias": {"S": alias},
            ":to": {"N": str(version)},
            ":now": {"S": now},
            ":moves": {"N": str(moves + 1)},
        }
        assignments = "#model = :model, #alias = :alias, #version = :to, #updated_at = :now, #moves = :moves"
        if current is None:
            condition = "attribute_not_exists(pk)"
        else:
            names["#previous_version"] = "previous_version"
            values[":from"] = {"N": str(current)}
            values[":seen_moves"] = {"N": str(moves)}
            assignments += ", #previous_version = :from"
            condition = "#version = :from AND #moves = :seen_moves"
        return {
            "Update": {
                "TableName": self.table,
                "Key": item_key(model, alias_sk(alias)),
                "UpdateExpression": f"SET {assignments}",
                "ConditionExpression": condition,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
        }

    # --- leases ---

    def _take_lease(self, lease: Lease) -> bool:
        self._ensure_table()
        try:
            self.client.put_item(
                TableName=self.table,
                Item=encode_lease(lease),
                ConditionExpression="attribute_not_exists(pk) OR expires_ms <= :now",
                ExpressionAttributeValues={":now": {"N": str(lease.acquired_ms)}},
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def renew_lease(self, lease: Lease, seconds: float) -> Lease:
        renewed = dataclasses.replace(lease, expires_ms=now_ms() + int(seconds * 1000))
        try:
            self._ensure_table()
            self.client.update_item(
                TableName=self.table,
                Key=item_key(lease.model, LEASE_SK),
                UpdateExpression="SET expires_ms = :expires",
                **self._held_by(lease, {":expires": {"N": str(renewed.expires_ms)}}),
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            raise self.lost(lease) from None
        return renewed

    def release_lease(self, lease: Lease) -> None:
        try:
            self._ensure_table()
            self.client.delete_item(
                TableName=self.table,
                Key=item_key(lease.model, LEASE_SK),
                ConditionExpression="#token = :token",
                ExpressionAttributeNames={"#token": "token"},
                ExpressionAttributeValues={":token": {"S": lease.token}},
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            pass  # expired and taken since: not ours to delete

    def current_lease(self, model: str) -> Lease | None:
        item = self._get_item(model, LEASE_SK)
        lease = None if item is None else decode_lease(model, item)
        return lease if lease is not None and lease.expires_ms > now_ms() else None

    @staticmethod
    def _held_by(lease: Lease, values: dict[str, Any] | None = None) -> dict[str, Any]:
        """The condition (and its names and values) that `lease` is still held, as of now."""
        return {
            "ConditionExpression": "#token = :token AND expires_ms > :now",
            "ExpressionAttributeNames": {"#token": "token"},
            "ExpressionAttributeValues": {":token": {"S": lease.token}, ":now": {"N": str(now_ms())}, **(values or {})},
        }

    def _lease_check(self, lease: Lease) -> dict[str, Any]:
        return {
            "ConditionCheck": {"TableName": self.table, "Key": item_key(lease.model, LEASE_SK), **self._held_by(lease)}
        }
