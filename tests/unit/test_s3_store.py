"""The S3 store against moto's S3 server (a real HTTP endpoint in its own process): whole and ranged reads,
multipart uploads, listing under the URL's prefix, keys that try to leave it, and health."""

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.settings import Settings
from app.storage import open_store
from app.storage.s3 import S3Store
from tests.conftest import S3_CREDENTIALS, S3Server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    s3 = S3Server(tmp_path_factory.mktemp("moto") / "moto.log")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in S3_CREDENTIALS.items():
            patch.setenv(name, value)
        yield s3
    s3.stop()


def _store(server: S3Server, prefix: str) -> S3Store:
    store = open_store(Settings.model_validate({k.lower(): v for k, v in server.env(prefix).items()}))
    assert isinstance(store, S3Store), "STORAGE_URL=s3:// opens the S3 store"
    return store


def test_a_multipart_upload_reads_back_whole_and_in_ranges(server: S3Server, tmp_path: Path) -> None:
    store = _store(server, "unit")
    data = os.urandom(20 * 1024 * 1024 + 3)  # past the 8 MiB part size: three parts
    source = tmp_path / "big"
    source.write_bytes(data)
    store.put_file("models/m1/upload", source)
    assert not source.exists(), "put_file consumes its source, like the local store's move"
    assert store.size("models/m1/upload") == len(data)
    assert hashlib.sha256(b"".join(store.iter_bytes("models/m1/upload"))).digest() == hashlib.sha256(data).digest()
    assert b"".join(store.iter_bytes("models/m1/upload", 5, 100)) == data[5:101], "an inclusive byte range"
    store.get_file("models/m1/upload", tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == data
    head = server.client().head_object(Bucket=server.bucket, Key="unit/models/m1/upload")
    assert "-3" in head["ETag"], "uploaded in three multipart parts, never one body in memory"


def test_keys_stay_under_the_prefix(server: S3Server, tmp_path: Path) -> None:
    mine, theirs = _store(server, "mine"), _store(server, "theirs")
    for store, name in ((mine, "a"), (theirs, "b")):
        (tmp_path / name).write_bytes(b"x")
        store.put_file(f"jobs/j/attempt-1/{name}", tmp_path / name)
    assert mine.list_keys("jobs/") == ["jobs/j/attempt-1/a"], "another prefix's objects are not listed"
    mine.delete("jobs/j/attempt-1/a")
    assert mine.list_keys("jobs/") == [] and theirs.list_keys("jobs/") == ["jobs/j/attempt-1/b"]
    for bad in ("../theirs/jobs/j/attempt-1/b", "/etc/passwd", "jobs//x"):
        with pytest.raises(ValueError, match="escapes"):
            mine.size(bad)


def test_health_follows_the_bucket(server: S3Server) -> None:
    assert _store(server, "unit").healthy()
    missing = S3Store("s3://no-such-bucket/x", server.endpoint, "us-east-1")
    assert not missing.healthy(), "/readyz reports a missing bucket as not ready"
