import pyarrow as pa
import pytest

from keiko.errors import MissingDataError
from keiko.storage import ArtifactStore, IntegrityError, sha256_bytes


def test_write_is_atomic_and_returns_the_sha256(tmp_path):
    store = ArtifactStore((tmp_path / "artifacts").as_uri())
    uri = store.uri("ctr", "2026-11-21", "model.npz")
    assert uri.endswith("/ctr/2026-11-21/model.npz")
    assert store.write_bytes(uri, b"first") == sha256_bytes(b"first")
    store.write_bytes(uri, b"second")  # a rerun overwrites in place
    assert store.read_bytes(uri) == b"second"
    leftovers = [p.name for p in (tmp_path / "artifacts" / "ctr" / "2026-11-21").iterdir()]
    assert leftovers == ["model.npz"]  # no temporary files left behind


def test_read_verified_refuses_a_changed_artifact(tmp_path):
    store = ArtifactStore((tmp_path / "a").as_uri())
    uri = store.uri("ctr", "d", "model.npz")
    sha = store.write_bytes(uri, b"weights")
    assert store.read_verified(uri, sha) == b"weights"
    store.write_bytes(uri, b"tampered")
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        store.read_verified(uri, sha)


def test_tables_round_trip_and_missing_artifacts_are_named(tmp_path):
    store = ArtifactStore((tmp_path / "a").as_uri())
    uri = store.uri("ctr", "d", "raw.parquet")
    store.write_table(uri, pa.table({"x": [1, 2, 3]}))
    assert store.read_table(uri).column("x").to_pylist() == [1, 2, 3]
    with pytest.raises(MissingDataError, match=r"test\.parquet"):
        store.read_table(store.uri("ctr", "d", "test.parquet"))
