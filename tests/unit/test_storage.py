import uuid

import pyarrow as pa
import pytest

from conftest import kill_a_writer_mid_write
from keiko.config import settings
from keiko.errors import MissingDataError
from keiko.storage import ArtifactStore, IntegrityError, open_store, sha256_bytes


@pytest.fixture(params=["file", "s3"])
def store(request, tmp_path, monkeypatch) -> ArtifactStore:
    """The same store contract on local files and on S3 (moto's server, through the Airflow connection)."""
    if request.param == "file":
        return ArtifactStore((tmp_path / "artifacts").as_uri())
    request.getfixturevalue("aws")
    from keiko.aws import aws_client

    bucket = f"keiko-{uuid.uuid4().hex[:12]}"
    aws_client("s3", settings().aws_conn_id).create_bucket(Bucket=bucket)
    monkeypatch.setenv("KEIKO_ARTIFACT_ROOT", f"s3://{bucket}/keiko")
    return open_store(settings())


def test_write_returns_the_sha256_and_a_rerun_overwrites(store):
    uri = store.uri("ctr", "2026-11-21", "model.npz")
    assert uri.endswith("/ctr/2026-11-21/model.npz")
    assert store.write_bytes(uri, b"first") == sha256_bytes(b"first")
    store.write_bytes(uri, b"second")  # a rerun overwrites in place
    assert store.read_bytes(uri) == b"second"
    assert store.glob(store.uri("ctr", "2026-11-21", "*")) == [uri]  # no temporary files left behind


def test_read_verified_refuses_a_changed_artifact(store):
    uri = store.uri("ctr", "d", "model.npz")
    sha = store.write_bytes(uri, b"weights")
    assert store.read_verified(uri, sha) == b"weights"
    store.write_bytes(uri, b"tampered")
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        store.read_verified(uri, sha)


def test_tables_round_trip_and_missing_artifacts_are_named(store):
    uri = store.uri("ctr", "d", "raw.parquet")
    store.write_table(uri, pa.table({"x": [1, 2, 3]}))
    assert store.read_table(uri).column("x").to_pylist() == [1, 2, 3]
    assert store.read_table(uri, filters=[("x", ">", 1)]).column("x").to_pylist() == [2, 3]
    with pytest.raises(MissingDataError, match=r"test\.parquet"):
        store.read_table(store.uri("ctr", "d", "test.parquet"))
    with pytest.raises(MissingDataError, match=r"model\.npz"):
        store.read_bytes(store.uri("ctr", "d", "model.npz"))


def test_s3_credentials_come_from_the_airflow_connection(aws, monkeypatch):
    """The connection `keiko_aws` alone carries credentials and endpoint: no AWS_* variables are set."""
    store = ArtifactStore("s3://no-such-bucket-here/keiko", aws_conn_id="keiko_aws")
    assert store.fs.client_kwargs.get("endpoint_url", store.fs.endpoint_url) == aws
    with pytest.raises(MissingDataError, match="no-such-bucket-here"):
        store.read_bytes(store.uri("ctr", "d", "model.npz"))


def test_a_write_removes_the_temporary_file_a_killed_write_left_in_its_folder(tmp_path):
    store = ArtifactStore((tmp_path / "artifacts").as_uri())
    uri = store.uri("ctr", "2026-11-21", "raw.parquet")
    left = kill_a_writer_mid_write(tmp_path / "artifacts" / "ctr" / "2026-11-21" / "raw.parquet")
    store.write_bytes(store.uri("ctr", "2026-11-21", "extract.sql"), b"SELECT 1")  # the next write there
    assert not left.exists()
    assert not store.exists(uri)  # the killed write never reached its final name
