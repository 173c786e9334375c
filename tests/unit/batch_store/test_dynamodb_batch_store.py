"""What the DynamoDB batch store does beyond the contract: its table (key schema, TTL), its items, and expiry
judged from the items' own TTL (DynamoDB deletes expired items up to 48 h late). On the session's moto server."""

from __future__ import annotations

import time
import uuid

import pytest

from keiko.aws import aws_client
from keiko.batch_store import BatchManifest
from keiko.batch_store.dynamodb_store import DynamoDBBatchStore, key_prefix, manifest_pk, pointer_pk, written_pk
from keiko.errors import KeikoError

pytestmark = pytest.mark.usefixtures("aws")


@pytest.fixture
def table() -> str:
    return f"keiko-batch-{uuid.uuid4().hex}"


@pytest.fixture
def client():
    from keiko.config import settings

    return aws_client("dynamodb", settings().aws_conn_id)


def published(store: DynamoDBBatchStore, *, ttl: float = 60, expires_in: float = 600) -> BatchManifest:
    store.write("ctr", 1, ["u1", "manifest", "written"], [0.25, 0.5, 0.75], ttl_seconds=ttl)
    now = time.time()
    manifest = BatchManifest("ctr", 1, 3, 0.1, now, now + expires_in)
    store.seal(manifest)
    store.switch("ctr", 1, expected=None)
    return manifest


def test_the_table_is_made_with_ttl_on_expires_at_and_one_item_per_key(table, client):
    store = DynamoDBBatchStore(table)
    published(store)
    description = client.describe_table(TableName=table)["Table"]
    assert description["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert description["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    ttl = client.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expires_at")
    items = {item["pk"]["S"]: item for item in client.scan(TableName=table)["Items"]}
    assert set(items) == {
        pointer_pk("ctr"),
        manifest_pk("ctr", 1),
        written_pk("ctr", 1),
        *(key_prefix("ctr", 1) + key for key in ("u1", "manifest", "written")),
    }
    assert items["ctr#v1#k#u1"]["score"] == {"N": "0.25"}
    assert time.time() < float(items["ctr#v1#k#u1"]["expires_at"]["N"]) <= time.time() + 61
    assert "expires_at" not in items[manifest_pk("ctr", 1)]  # the manifest stays until `delete`
    assert items[pointer_pk("ctr")]["version"] == {"N": "1"}
    # Keys named like the version's own items are keys all the same.
    assert [a.score for a in store.lookup("ctr", ["manifest", "written"])] == [0.5, 0.75]
    assert store.count("ctr", 1) == 3


def test_an_item_past_its_own_ttl_is_expired_though_dynamodb_has_not_deleted_it(table):
    store = DynamoDBBatchStore(table)
    manifest = published(store, ttl=60, expires_in=3600)  # written with a TTL shorter than the manifest's
    assert store.lookup("ctr", ["u1"], now=time.time() + 30)[0].score == 0.25
    late = store.lookup("ctr", ["u1", "nobody"], now=time.time() + 120)
    assert [(a.score, a.version, a.scored_at, a.fallback) for a in late] == [
        (None, 1, manifest.scored_at, "expired"),
        (None, 1, manifest.scored_at, "missing"),
    ]


def test_a_table_with_other_keys_is_refused(table, client):
    client.create_table(
        TableName=table,
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    with pytest.raises(KeikoError, match=r"the batch store needs pk \(HASH\)$"):
        DynamoDBBatchStore(table).lookup("ctr", ["u1"])


def test_scores_beyond_dynamodbs_numbers_are_refused(table):
    with pytest.raises(KeikoError, match="the score of key 'tiny'"):
        DynamoDBBatchStore(table).write("ctr", 1, ["ok", "tiny"], [0.5, 1e-200], ttl_seconds=60)
