"""AWS clients for S3, DynamoDB and Athena, through the amazon provider's hooks.

With KEIKO_AWS_CONN_ID naming an Airflow AWS connection, credentials, region and endpoint come from
it; without one, the hooks fall back to boto's default chain (environment, web identity, instance role).
"""

from __future__ import annotations

import random
import time
from typing import Any


def aws_client(service: str, conn_id: str, *, region: str | None = None) -> Any:
    """A boto3 client for `service` ("dynamodb", "athena", "glue", ...); `region` overrides the connection's."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    return AwsBaseHook(aws_conn_id=conn_id or None, client_type=service, region_name=region).get_conn()


def dynamodb_client(conn_id: str | None, region: str | None) -> Any:
    """A DynamoDB client through the connection `conn_id` (None: KEIKO_AWS_CONN_ID's, read now)."""
    from keiko.config import settings

    return aws_client("dynamodb", settings().aws_conn_id if conn_id is None else conn_id, region=region)


def back_off(attempt: int) -> None:
    """Sleep before retry `attempt` (0, 1, ...), with jitter: requests that conflicted do not meet again in
    lockstep."""
    time.sleep(random.uniform(0, min(1.0, 0.02 * 2**attempt)))


def s3_filesystem(conn_id: str) -> Any:
    """An s3fs filesystem configured from the connection (the provider's ObjectStorage implementation)."""
    from airflow.providers.amazon.aws.fs.s3 import get_fs

    return get_fs(conn_id or None)


def ready_dynamodb_table(
    client: Any, table: str, keys: dict[str, str], *, user: str, error: type[Exception]
) -> dict[str, Any]:
    """`table`'s description once it serves reads and writes, created (PAY_PER_REQUEST) when missing with `keys`
    (attribute -> HASH or RANGE, all strings); `error` naming `user` (the registry, the batch store) when it has
    other keys or a status nothing can use."""
    try:
        description = client.describe_table(TableName=table)["Table"]
    except client.exceptions.ResourceNotFoundException:
        try:
            description = client.create_table(
                TableName=table,
                AttributeDefinitions=[{"AttributeName": name, "AttributeType": "S"} for name in keys],
                KeySchema=[{"AttributeName": name, "KeyType": kind} for name, kind in keys.items()],
                BillingMode="PAY_PER_REQUEST",
            )["TableDescription"]
        except client.exceptions.ResourceInUseException:  # another process created it since we looked: use theirs
            description = client.describe_table(TableName=table)["Table"]
    found = {key["AttributeName"]: key["KeyType"] for key in description["KeySchema"]}
    if found != keys:
        wanted = " and ".join(f"{name} ({kind})" for name, kind in keys.items())
        raise error(f"DynamoDB table {table} has keys {found}, {user} needs {wanted}")
    status = description["TableStatus"]
    if status == "CREATING":
        client.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 300})
    elif status not in ("ACTIVE", "UPDATING"):  # UPDATING tables serve reads and writes
        raise error(f"DynamoDB table {table} is {status}: {user} cannot use it")
    return description
