"""AWS clients for S3, DynamoDB and Athena, through the amazon provider's hooks.

With KEIKO_AWS_CONN_ID naming an Airflow AWS connection, credentials, region and endpoint come from
it; without one, the hooks fall back to boto's default chain (environment, web identity, instance role).
"""

from __future__ import annotations

from typing import Any


def aws_client(service: str, conn_id: str, *, region: str | None = None) -> Any:
    """A boto3 client for `service` ("dynamodb", "athena", "glue", ...); `region` overrides the connection's."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    return AwsBaseHook(aws_conn_id=conn_id or None, client_type=service, region_name=region).get_conn()


def s3_filesystem(conn_id: str) -> Any:
    """An s3fs filesystem configured from the connection (the provider's ObjectStorage implementation)."""
    from airflow.providers.amazon.aws.fs.s3 import get_fs

    return get_fs(conn_id or None)
