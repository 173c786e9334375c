"""The DynamoDB registry's keys and items (pure functions), and how it finds or creates its table."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import boto3
import pytest
from botocore.stub import Stubber

from keiko.aws import ready_dynamodb_table
from keiko.errors import RegistryError
from keiko.registry import ModelVersion
from keiko.registry.dynamodb import (
    DynamoDBRegistry,
    decode_history,
    decode_version,
    encode_history,
    encode_version,
    history_prefix,
    history_sk,
    identity_sk,
    parse_url,
    version_sk,
)

VERSION = ModelVersion(
    model="ctr",
    version=12,
    status="registered",
    ds="2026-11-21",
    window_start="2026-11-15",
    window_end="2026-11-21",
    artifact_uri="s3://bucket/keiko/ctr/versions/ab/model.npz",
    artifact_sha256="ab" * 32,
    code_version="0.1.0+abc",
    config_sha256="c" * 64,
    features_sha256="f" * 64,
    algorithm="hashed_logistic_regression",
    metrics={"test": {"logloss": 0.1 + 0.2, "auc": 1 / 3, "rows": 7}, "notes": ["ok"]},
    reason="",
    run_id="manual__2026-11-21",
    created_at="2026-11-22T10:00:00.123456+00:00",
)


def test_version_keys_sort_as_numbers():
    numbers = [1, 2, 9, 10, 11, 100, 1_000_000]
    assert sorted(version_sk(n) for n in numbers) == [version_sk(n) for n in numbers]
    assert version_sk(12) == "VERSION#0000000012"
    with pytest.raises(RegistryError, match="does not fit"):
        version_sk(10**10)


def test_history_keys_sort_by_move_and_stay_within_their_alias():
    assert sorted([history_sk("production", 10), history_sk("production", 9)])[0] == history_sk("production", 9)
    # "prod" must not see the history of an alias named "prod#x".
    assert not history_sk("prod#x", 1).startswith(history_prefix("prod"))


def test_identity_keys_cannot_collide_through_separators():
    assert identity_sk(window_start="a#b", window_end="c", artifact_sha256="d") != identity_sk(
        window_start="a", window_end="b#c", artifact_sha256="d"
    )


def test_a_version_round_trips_exactly():
    item = encode_version(VERSION)
    assert item["pk"] == {"S": "MODEL#ctr"} and item["sk"] == {"S": "VERSION#0000000012"}
    assert item["version"] == {"N": "12"}
    assert set(item["metrics"]) == {"S"}  # JSON: DynamoDB numbers would not take Python floats
    assert decode_version(item) == VERSION


def test_a_history_entry_round_trips_with_or_without_a_from_version():
    for from_version in (None, 3):
        item = encode_history(
            model="ctr", alias="production", move=2, from_version=from_version, to_version=4, at="t", note="n"
        )
        assert ("from_version" in item) == (from_version is not None)
        assert decode_history(item) == {
            "id": 2,
            "model": "ctr",
            "alias": "production",
            "from_version": from_version,
            "to_version": 4,
            "at": "t",
            "note": "n",
        }


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        ("dynamodb://keiko-registry", ("keiko-registry", None)),
        ("dynamodb://keiko-registry/", ("keiko-registry", None)),
        ("dynamodb://Keiko.Registry_2?region=eu-west-1", ("Keiko.Registry_2", "eu-west-1")),
    ],
)
def test_parse_url(url, parsed):
    assert parse_url(url) == parsed


# --- the table, on the moto server ---


def table_name() -> str:
    return f"keiko-registry-{uuid.uuid4().hex}"


def test_the_table_is_created_on_first_use(aws):
    registry = DynamoDBRegistry(table_name())
    assert registry.list("ctr") == []
    table = registry.client.describe_table(TableName=registry.table)["Table"]
    assert table["TableStatus"] == "ACTIVE"
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert {k["AttributeName"]: k["KeyType"] for k in table["KeySchema"]} == {"pk": "HASH", "sk": "RANGE"}


def test_concurrent_first_uses_share_one_table(aws):
    name = table_name()
    registries = [DynamoDBRegistry(name) for _ in range(4)]
    assert all(registry.client for registry in registries)  # made before the start: only the tables race
    start = threading.Barrier(len(registries))
    errors: list[BaseException] = []

    def first_use(registry: DynamoDBRegistry) -> None:
        start.wait(timeout=60)
        try:
            registry.aliases_of("ctr")
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=first_use, args=(r,)) for r in registries]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert registries[0].client.describe_table(TableName=name)["Table"]["TableStatus"] == "ACTIVE"


class LookedBeforeItWasCreated:
    """A client whose first describe_table found no table, as one that looked just before another created it."""

    def __init__(self, client) -> None:
        self.client, self.looked = client, False

    def describe_table(self, **kwargs):
        if not self.looked:
            self.looked = True
            error = {"Error": {"Code": "ResourceNotFoundException", "Message": "not yet"}}
            raise self.client.exceptions.ResourceNotFoundException(error, "DescribeTable")
        return self.client.describe_table(**kwargs)

    def __getattr__(self, name):
        return getattr(self.client, name)


def test_a_creator_that_lost_the_race_uses_the_existing_table(aws):
    first, second = DynamoDBRegistry(name := table_name()), DynamoDBRegistry(name)
    first.list("ctr")
    # `second` looked before `first` created the table: its create_table meets ResourceInUseException.
    client = LookedBeforeItWasCreated(second.client)
    keys = {"pk": "HASH", "sk": "RANGE"}
    assert ready_dynamodb_table(client, name, keys, user="the registry", error=RegistryError)["TableName"] == name
    assert client.looked


def test_a_table_with_other_keys_is_refused(aws):
    registry = DynamoDBRegistry(table_name())
    registry.client.create_table(
        TableName=registry.table,
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    with pytest.raises(RegistryError, match=f"{registry.table} has keys .*needs pk \\(HASH\\) and sk \\(RANGE\\)"):
        registry.list("ctr")


def test_the_url_region_overrides_the_connection(aws):
    registry = DynamoDBRegistry.from_url(f"dynamodb://{table_name()}?region=eu-west-1")
    assert registry.client.meta.region_name == "eu-west-1"
    assert registry.list("ctr") == []


def test_the_aws_connection_comes_from_settings(aws):
    assert DynamoDBRegistry(table_name()).client.meta.endpoint_url == aws


# --- TransactionConflict: real DynamoDB cancels a transaction that meets another in flight; moto never does ---


@pytest.fixture
def stubbed() -> Iterator[tuple[DynamoDBRegistry, Stubber]]:
    """A registry whose client answers from a queue of stubbed responses (table taken as ready)."""
    client = boto3.client("dynamodb", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    registry = DynamoDBRegistry("keiko-registry")
    registry.__dict__["client"] = client  # the cached_property's slot
    registry._table_ready = True
    with Stubber(client) as stubber:
        yield registry, stubber
        stubber.assert_no_pending_responses()


def cancelled(stubber: Stubber, *codes: str) -> None:
    stubber.add_client_error(
        "transact_write_items",
        service_error_code="TransactionCanceledException",
        service_message="Transaction cancelled",
        modeled_fields={"CancellationReasons": [{"Code": code} for code in codes]},
    )


def test_a_registration_that_met_a_concurrent_transaction_is_retried(stubbed, monkeypatch):
    registry, stubber = stubbed
    monkeypatch.setattr("keiko.registry.dynamodb.back_off", lambda attempt: None)
    for outcome in ("conflict", "committed"):
        stubber.add_response("get_item", {})  # the identity is new
        stubber.add_response("query", {"Items": [encode_version(VERSION)]})  # v12 is the highest
        if outcome == "conflict":
            cancelled(stubber, "TransactionConflict", "None")
        else:
            stubber.add_response("transact_write_items", {})
    fields = {name: getattr(VERSION, name) for name in ("model", "ds", "window_start", "window_end", "artifact_uri")}
    registration = registry.register(
        **fields,
        artifact_sha256="cd" * 32,
        code_version=VERSION.code_version,
        config_sha256=VERSION.config_sha256,
        features_sha256=VERSION.features_sha256,
        algorithm=VERSION.algorithm,
        metrics={},
    )
    assert registration.created and registration.version.version == 13


def test_an_alias_move_that_met_a_concurrent_transaction_is_retried(stubbed, monkeypatch):
    registry, stubber = stubbed
    monkeypatch.setattr("keiko.registry.dynamodb.back_off", lambda attempt: None)
    alias = {"pk": {"S": "MODEL#ctr"}, "sk": {"S": "ALIAS#production"}, "version": {"N": "11"}, "moves": {"N": "3"}}
    stubber.add_response("get_item", {"Item": encode_version(VERSION)})  # the target, registered
    for outcome in ("conflict", "committed"):
        stubber.add_response("get_item", {"Item": alias})
        if outcome == "conflict":
            cancelled(stubber, "None", "TransactionConflict", "None")
        else:
            stubber.add_response("transact_write_items", {})
    assert registry.move_alias("ctr", 12, expected=11) == 11


def test_an_unexpected_cancellation_is_an_error_naming_the_version(stubbed):
    registry, stubber = stubbed
    stubber.add_response("get_item", {"Item": encode_version(VERSION)})
    stubber.add_response("get_item", {})
    cancelled(stubber, "ValidationError", "None", "None")
    with pytest.raises(RegistryError, match=r"could not move ctr production to v12: .*ValidationError"):
        registry.move_alias("ctr", 12)
