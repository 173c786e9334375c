"""The artifact store: `{artifact_root}/{model}/{ds}/{name}` on any fsspec filesystem (file://, s3://).

Writes are atomic (temporary name, then rename, keiko.atomic; a single PUT on object stores) so a retried
or killed stage never leaves a half-written artifact under its final name, and the next write into the
folder removes the temporary file a killed one left.
"""

from __future__ import annotations

import hashlib
import io
import json
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from keiko.atomic import write_atomically
from keiko.errors import KeikoError, MissingDataError
from keiko.phases import phase

if TYPE_CHECKING:
    from keiko.config import Settings

S3_PROTOCOLS = ("s3", "s3a")


class IntegrityError(KeikoError):
    """An artifact's content does not match its recorded sha256."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ArtifactStore:
    """:param aws_conn_id: for s3:// roots, the Airflow AWS connection (empty: boto's default chain)."""

    def __init__(self, root_uri: str, *, aws_conn_id: str = "") -> None:
        self.root_uri = root_uri.rstrip("/")
        self.aws_conn_id = aws_conn_id

    @cached_property
    def fs(self) -> fsspec.AbstractFileSystem:
        if fsspec.utils.get_protocol(self.root_uri) in S3_PROTOCOLS:
            from keiko.aws import s3_filesystem

            return s3_filesystem(self.aws_conn_id)
        fs, _ = fsspec.url_to_fs(self.root_uri)
        return fs

    @cached_property
    def _is_local(self) -> bool:
        return "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))

    def uri(self, model: str, ds: str, name: str) -> str:
        return f"{self.root_uri}/{model}/{ds}/{name}"

    def _path(self, uri: str) -> str:
        return fsspec.core.strip_protocol(uri) if self._is_local else uri

    def exists(self, uri: str) -> bool:
        return self.fs.exists(self._path(uri))

    def glob(self, pattern: str) -> list[str]:
        """URIs matching a glob pattern given as a URI under this store."""
        return sorted(self.fs.unstrip_protocol(path) for path in self.fs.glob(self._path(pattern)))

    def delete(self, uri: str, recursive: bool = False) -> None:
        """Delete a file, or with `recursive` a directory and everything under it; nothing if absent."""
        if self.exists(uri):
            self.fs.rm(self._path(uri), recursive=recursive)

    def write_bytes(self, uri: str, data: bytes) -> str:
        """Write atomically; returns the sha256 of what was written."""
        path = self._path(uri)
        if self._is_local:
            write_atomically(Path(path), lambda temp: temp.write_bytes(data))
        else:
            self.fs.pipe_file(path, data)
        return sha256_bytes(data)

    def read_bytes(self, uri: str) -> bytes:
        try:
            with phase("read"):
                return self.fs.cat_file(self._path(uri))
        except FileNotFoundError:
            raise MissingDataError(f"artifact not found: {uri}") from None

    def read_verified(self, uri: str, sha256: str) -> bytes:
        """Read an artifact only if its content still has the sha256 recorded for it."""
        data = self.read_bytes(uri)
        actual = sha256_bytes(data)
        if actual != sha256:
            raise IntegrityError(f"sha256 mismatch for {uri}: registry has {sha256[:12]}, file has {actual[:12]}")
        return data

    def write_json(self, uri: str, obj: Any) -> str:
        return self.write_bytes(uri, json.dumps(obj, indent=2, sort_keys=True, default=str).encode() + b"\n")

    def read_json(self, uri: str) -> Any:
        return json.loads(self.read_bytes(uri))

    def write_table(self, uri: str, table: pa.Table, use_dictionary: bool | list[str] = True) -> str:
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd", use_dictionary=use_dictionary)
        return self.write_bytes(uri, buffer.getvalue())

    def read_table(self, uri: str, columns: list[str] | None = None, filters: list | None = None) -> pa.Table:
        """Read a Parquet artifact; `filters` (pyarrow DNF) skip row groups and rows not needed."""
        if not self.exists(uri):
            raise MissingDataError(f"artifact not found: {uri} (did the upstream stage run for this date?)")
        with phase("read"), self.fs.open(self._path(uri), "rb") as f:
            return pq.read_table(f, columns=columns, filters=filters)

    def read_metadata(self, uri: str) -> pq.FileMetaData:
        """A Parquet artifact's footer: its schema, row groups and their column statistics."""
        if not self.exists(uri):
            raise MissingDataError(f"artifact not found: {uri} (did the upstream stage run for this date?)")
        with phase("read"), self.fs.open(self._path(uri), "rb") as f:
            return pq.read_metadata(f)


def open_store(config: Settings) -> ArtifactStore:
    """The artifact store KEIKO_ARTIFACT_ROOT names, with KEIKO_AWS_CONN_ID's credentials for s3://."""
    return ArtifactStore(config.artifact_root, aws_conn_id=config.aws_conn_id)
