"""keiko_ctr end to end with artifacts in S3 and the registry in DynamoDB, chosen by configuration alone.

Both are moto's server on loopback, reached through the Airflow AWS connection `keiko_aws` (credentials
and endpoint live only there). `airflow dags test` runs every stage and gate in its own process, and
the model server loads its versions from the same S3 and DynamoDB.
"""

import os
import uuid

import httpx
import pytest

from conftest import DS, airflow_and_servers, aws_connection_env, dags_test

pytestmark = pytest.mark.slow


@pytest.fixture
def aws_environment(tmp_path, warehouse_dir, moto_endpoint):
    bucket, table = f"keiko-e2e-{uuid.uuid4().hex[:8]}", f"keiko-registry-{uuid.uuid4().hex[:8]}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        **aws_connection_env(moto_endpoint),
        "KEIKO_HOME": str(tmp_path / "home"),
        "KEIKO_WAREHOUSE_DIR": str(warehouse_dir),
        "KEIKO_ARTIFACT_ROOT": f"s3://{bucket}/keiko",
        "KEIKO_REGISTRY_URL": f"dynamodb://{table}",
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        from keiko.aws import aws_client
        from keiko.config import settings

        aws_client("s3", settings().aws_conn_id).create_bucket(Bucket=bucket)
        with airflow_and_servers(env, "ctr") as (env, urls):
            yield env, bucket, urls[0]


def test_dag_runs_with_artifacts_in_s3_and_the_registry_in_dynamodb(aws_environment, tmp_path):
    env, bucket, url = aws_environment
    output = dags_test(env, "ctr")
    assert "production alias moved none -> v1" in output
    assert "gate_serving passed" in output

    from keiko.aws import aws_client
    from keiko.config import settings
    from keiko.registry import open_registry
    from keiko.storage import open_store

    config = settings()
    keys = {
        o["Key"]
        for page in aws_client("s3", config.aws_conn_id).get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for o in page.get("Contents", [])
    }
    day = f"keiko/ctr/{DS}"
    for artifact in ("raw.parquet", "test.parquet", "model.npz", "evaluation.json", "deploy.json"):
        assert f"{day}/{artifact}" in keys, artifact
    assert f"{day}/gates/raw.json" in keys
    assert not [key for key in keys if "/data_docs/" in key]  # rendered for failed gates only
    assert not (tmp_path / "home" / "artifacts").exists()  # nothing went to local files
    assert not (tmp_path / "home" / "registry.db").exists()

    registry = open_registry(config.registry_url)
    assert registry.alias("ctr") == 1
    entry = registry.get("ctr", 1)
    assert entry.artifact_uri.startswith(f"s3://{bucket}/keiko/ctr/versions/")
    assert open_store(config).read_verified(entry.artifact_uri, entry.artifact_sha256)
    status = httpx.get(f"{url}/version").json()
    assert (status["version"], status["artifact_sha256"]) == (1, entry.artifact_sha256)
