"""The DynamoDB batch store: one table keyed by `pk` (S) alone, one item per key so writes spread over partitions.

Items (`<model>` is [a-z][a-z0-9_]*, `<version>` digits, so the prefixes cannot collide):

    <model>#pointer                  version (N): the serving version
    <model>#v<version>#manifest      version (N), manifest (S: the BatchManifest as JSON, floats exact)
    <model>#v<version>#written       written (N): keys acknowledged by `write`, expires_at (N)
    <model>#v<version>#k#<key>       score (N), expires_at (N: epoch seconds, the table's TTL attribute)

Key items carry `#k#` before the key, so a key named "manifest" or "written" is not the version's manifest.
The table (PAY_PER_REQUEST) is created on first use if missing, with TTL on `expires_at`; DynamoDB deletes
expired items lazily (up to 48 h late), so a lookup checks expiry itself: every key of a version whose
manifest's expires_at is past is "expired", and so is a key item past its own expires_at.

- `write`: BatchWriteItem, 25 items a call (calls in parallel threads), UnprocessedItems retried with back-off;
  then one UpdateItem ADDs the chunk's size to the version's `written` counter.
- `count` is the sealed manifest's `keys` (the acknowledged writes of the run that sealed it); before the seal,
  that counter (a retried chunk counts again: rewriting the same items is otherwise idempotent). Counting the
  items themselves would be a Scan of the table.
- `seal` Puts the manifest. It does not rewrite the key items' expires_at (a second write of the whole batch):
  they keep the TTL their `write` gave them, so write with a ttl_seconds that reaches the manifest's expires_at.
- `switch`: one TransactWriteItems, a ConditionCheck that the manifest exists and the pointer's Put on
  condition that it names `expected` (`attribute_not_exists(pk)` for none); DynamoDB serializes it with any
  other transaction on those items (`delete`'s).
- `lookup`: GetItem (ConsistentRead) of the pointer, then BatchGetItem (ConsistentRead; 100 keys a call,
  UnprocessedKeys retried) of the manifest and the keys under the version it named: two round trips and
  more, but one version for all the call's keys.
- `delete`: a transaction deletes the manifest unless the pointer names the version (so it cannot be switched
  to any more), then a Scan finds the version's key items and BatchWriteItem deletes them.

boto3 is synchronous: `alookup` runs `lookup` in a worker thread (asyncio.to_thread).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from keiko.aws import back_off, dynamodb_client, ready_dynamodb_table
from keiko.batch_store import (
    BatchManifest,
    BatchNotSealed,
    BatchStore,
    Lookup,
    PointerMoved,
    answers,
    check_chunk,
    check_keys,
    check_manifest,
    check_model,
    check_version,
)
from keiko.errors import KeikoError, RegistryError
from keiko.registry.dynamodb import CONDITION_FAILED, TABLE_NAME, TRANSIENT_CANCELLATIONS, parse_url

if TYPE_CHECKING:
    import numpy as np

Item = dict[str, dict[str, Any]]  # the low-level client's typed form ({"S": ...})

WRITE_BATCH = 25  # BatchWriteItem's limit
READ_BATCH = 100  # BatchGetItem's limit
MAX_ATTEMPTS = 10  # of a batch's unprocessed items, and of a conflicted switch
WRITE_THREADS = 8  # BatchWriteItem calls of one `write` in flight at once
TTL_ATTRIBUTE = "expires_at"
# DynamoDB numbers: 38 significant digits (a float's repr has at most 17), magnitudes 1e-130 to below 1e126.
SMALLEST, LARGEST = 1e-130, 1e126


def pointer_pk(model: str) -> str:
    return f"{model}#pointer"


def version_pk(model: str, version: int) -> str:
    return f"{model}#v{version}#"


def manifest_pk(model: str, version: int) -> str:
    return f"{version_pk(model, version)}manifest"


def written_pk(model: str, version: int) -> str:
    return f"{version_pk(model, version)}written"


def key_prefix(model: str, version: int) -> str:
    return f"{version_pk(model, version)}k#"


def _key(pk: str) -> Item:
    return {"pk": {"S": pk}}


class DynamoDBBatchStore(BatchStore):
    """The batch store in DynamoDB table `table`, created (PAY_PER_REQUEST, TTL on `expires_at`) on first use
    if missing.

    Credentials, region and endpoint come from the Airflow AWS connection `aws_conn_id` (default:
    KEIKO_AWS_CONN_ID; empty: boto's default chain), as for the registry; `region` overrides the connection's.
    Nothing is read or created until the first operation. One instance may be shared by threads.
    """

    def __init__(
        self,
        table: str,
        *,
        region: str | None = None,
        aws_conn_id: str | None = None,
        write_threads: int = WRITE_THREADS,
    ) -> None:
        if not isinstance(table, str) or not TABLE_NAME.fullmatch(table):
            raise KeikoError(f"{table!r} is not a DynamoDB table name (3 to 255 letters, digits, '_', '-' or '.')")
        self.table = table
        self.region = region
        self.write_threads = write_threads
        self._aws_conn_id = aws_conn_id  # None: settings().aws_conn_id, read when the client is made
        self._table_ready = False
        self._table_lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str) -> DynamoDBBatchStore:
        try:
            table, region = parse_url(url)
        except RegistryError as error:  # the registry's parser, which says "registry URL"
            raise KeikoError(str(error).replace("registry URL", "batch store URL", 1)) from None
        return cls(table, region=region)

    def __repr__(self) -> str:
        return f"DynamoDBBatchStore({self.table!r}, region={self.region!r})"

    def describe(self) -> str:
        return f"dynamodb://{self.table}" + ("" if self.region is None else f"?region={self.region}")

    @cached_property
    def client(self) -> Any:
        return dynamodb_client(self._aws_conn_id, self.region)

    # --- the table ---

    def _ensure_table(self) -> None:
        if self._table_ready:
            return
        with self._table_lock:
            if not self._table_ready:
                ready_dynamodb_table(self.client, self.table, {"pk": "HASH"}, user="the batch store", error=KeikoError)
                self._ensure_ttl()
                self._table_ready = True

    def _ensure_ttl(self) -> None:
        ttl = self.client.describe_time_to_live(TableName=self.table)["TimeToLiveDescription"]
        if ttl.get("TimeToLiveStatus") in ("ENABLED", "ENABLING"):
            if ttl.get("AttributeName") != TTL_ATTRIBUTE:
                raise KeikoError(
                    f"DynamoDB table {self.table} has TTL on {ttl.get('AttributeName')!r}, "
                    f"the batch store needs it on {TTL_ATTRIBUTE!r}"
                )
            return
        try:
            self.client.update_time_to_live(
                TableName=self.table, TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE}
            )
        except ClientError as error:  # another process enabled it meanwhile
            if "already enabled" not in str(error).lower():
                raise

    # --- low-level ---

    def _get(self, pk: str) -> Item | None:
        self._ensure_table()
        return self.client.get_item(TableName=self.table, Key=_key(pk), ConsistentRead=True).get("Item")

    def _batch_write(self, requests: list[dict[str, Any]]) -> None:
        """BatchWriteItem of `requests` (PutRequest / DeleteRequest), 25 a call, in parallel threads."""
        batches = [requests[i : i + WRITE_BATCH] for i in range(0, len(requests), WRITE_BATCH)]
        if len(batches) <= 1 or self.write_threads <= 1:
            for batch in batches:
                self._write_batch(batch)
            return
        with ThreadPoolExecutor(max_workers=min(self.write_threads, len(batches))) as pool:
            for _ in pool.map(self._write_batch, batches):
                pass

    def _write_batch(self, batch: list[dict[str, Any]]) -> None:
        pending: dict[str, list[dict[str, Any]]] = {self.table: batch}
        for attempt in range(MAX_ATTEMPTS):
            pending = self.client.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
            if not pending:
                return
            back_off(attempt)
        left = len(pending.get(self.table, []))
        raise KeikoError(f"DynamoDB table {self.table}: {left} items still unprocessed after {MAX_ATTEMPTS} attempts")

    def _batch_get(self, pks: list[str]) -> dict[str, Item]:
        """The items of `pks` (distinct, at most 100) that exist, by pk; strongly consistent."""
        names = {"#pk": "pk", "#s": "score", "#e": TTL_ATTRIBUTE, "#m": "manifest"}
        pending: dict[str, Any] = {
            self.table: {
                "Keys": [_key(pk) for pk in pks],
                "ConsistentRead": True,
                "ProjectionExpression": "#pk, #s, #e, #m",
                "ExpressionAttributeNames": names,
            }
        }
        found: dict[str, Item] = {}
        for attempt in range(MAX_ATTEMPTS):
            answer = self.client.batch_get_item(RequestItems=pending)
            for item in answer.get("Responses", {}).get(self.table, []):
                found[item["pk"]["S"]] = item
            pending = answer.get("UnprocessedKeys") or {}
            if not pending:
                return found
            back_off(attempt)
        raise KeikoError(f"DynamoDB table {self.table}: keys still unprocessed after {MAX_ATTEMPTS} attempts")

    # --- writes ---

    def write(
        self,
        model: str,
        version: int,
        keys: Sequence[str],
        scores: Sequence[float] | np.ndarray,
        *,
        ttl_seconds: float,
    ) -> int:
        check_model(model)
        check_version(version)
        keys, values = check_chunk(keys, scores, ttl_seconds)
        for key, value in zip(keys, values, strict=True):
            if value != 0 and not SMALLEST <= abs(value) < LARGEST:
                raise KeikoError(f"batch store: the score of key {key!r} is {value!r}, beyond DynamoDB's numbers")
        if not keys:
            return 0
        self._ensure_table()
        expires = {"N": str(math.ceil(time.time() + ttl_seconds))}  # TTL is whole seconds
        prefix = key_prefix(model, version)
        self._batch_write(
            [
                {"PutRequest": {"Item": {"pk": {"S": prefix + k}, "score": {"N": repr(v)}, TTL_ATTRIBUTE: expires}}}
                for k, v in zip(keys, values, strict=True)
            ]
        )
        self.client.update_item(
            TableName=self.table,
            Key=_key(written_pk(model, version)),
            UpdateExpression="ADD written :n SET #e = :e",
            ExpressionAttributeNames={"#e": TTL_ATTRIBUTE},
            ExpressionAttributeValues={":n": {"N": str(len(keys))}, ":e": expires},
        )
        return len(keys)

    def seal(self, manifest: BatchManifest) -> None:
        check_manifest(manifest)
        self._ensure_table()
        # No `expires_at` attribute: the manifest stays (until `delete`) so that lookups can say "expired".
        self.client.put_item(
            TableName=self.table,
            Item={
                **_key(manifest_pk(manifest.model, manifest.version)),
                "version": {"N": str(manifest.version)},
                "manifest": {"S": json.dumps(dataclasses.asdict(manifest))},
            },
        )

    def switch(self, model: str, version: int | None, *, expected: int | None) -> None:
        check_model(model)
        for each in (version, expected):
            if each is not None:
                check_version(each)
        self._ensure_table()
        if expected is None:
            condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"}
        else:
            condition = {
                "ConditionExpression": "#v = :expected",
                "ExpressionAttributeNames": {"#v": "version"},
                "ExpressionAttributeValues": {":expected": {"N": str(expected)}},
            }
        if version is None:
            try:
                self.client.delete_item(TableName=self.table, Key=_key(pointer_pk(model)), **condition)
            except self.client.exceptions.ConditionalCheckFailedException:
                raise self._moved(model, version, expected) from None
            return
        actions = [
            {
                "ConditionCheck": {
                    "TableName": self.table,
                    "Key": _key(manifest_pk(model, version)),
                    "ConditionExpression": "attribute_exists(pk)",
                }
            },
            {
                "Put": {
                    "TableName": self.table,
                    "Item": {**_key(pointer_pk(model)), "version": {"N": str(version)}},
                    **condition,
                }
            },
        ]
        for attempt in range(MAX_ATTEMPTS):
            codes = self._transact(actions)
            if codes is None:
                return
            manifest_code, pointer_code = codes
            if pointer_code == CONDITION_FAILED:
                raise self._moved(model, version, expected)
            if manifest_code == CONDITION_FAILED:
                raise BatchNotSealed(
                    f"{model} v{version} has no sealed batch (failed or incomplete): pointer not moved"
                )
            if not TRANSIENT_CANCELLATIONS.intersection(codes):
                raise KeikoError(f"could not switch {model}'s batch pointer to v{version}: cancelled ({codes})")
            back_off(attempt)
        raise KeikoError(f"could not switch {model}'s batch pointer to v{version}: {MAX_ATTEMPTS} conflicts; retry")

    def _moved(self, model: str, version: int | None, expected: int | None) -> PointerMoved:
        item = self._get(pointer_pk(model))
        found = None if item is None else int(item["version"]["N"])
        return PointerMoved(
            f"{model}'s batch pointer names {_named(found)}, expected {_named(expected)}: "
            f"not moved to {_named(version)}"
        )

    def _transact(self, actions: list[dict[str, Any]]) -> list[str] | None:
        """One TransactWriteItems: None if it committed, else each action's cancellation code ("None": fine)."""
        try:
            self.client.transact_write_items(TransactItems=actions)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "TransactionCanceledException":
                raise
            codes = [reason.get("Code") or "None" for reason in error.response.get("CancellationReasons", [])]
            if len(codes) != len(actions):
                raise KeikoError(
                    f"DynamoDB table {self.table}: a transaction cancelled without reasons: {error}"
                ) from None
            return codes
        return None

    def delete(self, model: str, version: int) -> int:
        check_model(model)
        check_version(version)
        self._ensure_table()
        codes = self._transact(
            [
                {
                    "ConditionCheck": {
                        "TableName": self.table,
                        "Key": _key(pointer_pk(model)),
                        "ConditionExpression": "attribute_not_exists(pk) OR #v <> :version",
                        "ExpressionAttributeNames": {"#v": "version"},
                        "ExpressionAttributeValues": {":version": {"N": str(version)}},
                    }
                },
                {"Delete": {"TableName": self.table, "Key": _key(manifest_pk(model, version))}},
            ]
        )
        if codes is not None:
            if codes[0] == CONDITION_FAILED:
                raise KeikoError(
                    f"{model} v{version} is the batch that serves: switch the pointer away before deleting it"
                )
            raise KeikoError(f"could not delete {model} v{version}'s batch: cancelled ({codes}); retry")
        # A Scan of the whole table: the key items share no partition (by design), deleting is rare.
        keys = []
        for page in self.client.get_paginator("scan").paginate(
            TableName=self.table,
            FilterExpression="begins_with(pk, :prefix)",
            ExpressionAttributeValues={":prefix": {"S": key_prefix(model, version)}},
            ProjectionExpression="pk",
            ConsistentRead=True,
        ):
            keys.extend(item["pk"]["S"] for item in page.get("Items", []))
        self._batch_write([{"DeleteRequest": {"Key": _key(pk)}} for pk in [*keys, written_pk(model, version)]])
        return len(keys)

    # --- reads ---

    def manifest(self, model: str, version: int) -> BatchManifest | None:
        item = self._get(manifest_pk(check_model(model), check_version(version)))
        return None if item is None else _manifest(item)

    def count(self, model: str, version: int) -> int:
        """The sealed manifest's keys (the acknowledged writes of the run that sealed it: a task retried from
        its start counts its own); before the seal, the keys acknowledged by writes so far (a retried chunk
        counts again). Counting the items themselves would be a Scan of the table."""
        sealed = self.manifest(model, version)
        if sealed is not None:
            return sealed.keys
        item = self._get(written_pk(model, version))
        return 0 if item is None else int(item["written"]["N"])

    def pointer(self, model: str) -> BatchManifest | None:
        version = self._pointer(check_model(model))
        return None if version is None else self.manifest(model, version)

    def _pointer(self, model: str) -> int | None:
        item = self._get(pointer_pk(model))
        return None if item is None else int(item["version"]["N"])

    def lookup(self, model: str, keys: Sequence[str], *, now: float | None = None) -> list[Lookup]:
        check_model(model)
        keys = check_keys(keys)
        if not keys:
            return []
        now = time.time() if now is None else now
        version = self._pointer(model)
        if version is None:
            return answers(keys, None, None, [], now)
        prefix = key_prefix(model, version)
        wanted = [manifest_pk(model, version), *dict.fromkeys(prefix + key for key in keys)]
        found: dict[str, Item] = {}
        for start in range(0, len(wanted), READ_BATCH):
            found.update(self._batch_get(wanted[start : start + READ_BATCH]))
        manifest_item = found.get(wanted[0])
        items = [found.get(prefix + key) for key in keys]
        looked_up = answers(
            keys,
            version,
            None if manifest_item is None else _manifest(manifest_item),
            [None if item is None else float(item["score"]["N"]) for item in items],
            now,
        )
        # An item past its own TTL may still be there (DynamoDB deletes lazily): it is expired all the same.
        return [
            dataclasses.replace(answer, score=None, fallback="expired")
            if answer.fallback is None and item is not None and now > float(item[TTL_ATTRIBUTE]["N"])
            else answer
            for answer, item in zip(looked_up, items, strict=True)
        ]

    async def alookup(self, model: str, keys: Sequence[str], *, now: float | None = None) -> list[Lookup]:
        # boto3 is synchronous: the lookup's requests run in a worker thread, not blocking the event loop.
        return await asyncio.to_thread(self.lookup, model, keys, now=now)

    def close(self) -> None:
        client = self.__dict__.pop("client", None)
        self._table_ready = False
        if client is not None:
            client.close()


def _manifest(item: Item) -> BatchManifest:
    return BatchManifest(**json.loads(item["manifest"]["S"]))


def _named(version: int | None) -> str:
    return "no version" if version is None else f"v{version}"
