"""A store in an S3-compatible bucket (AWS S3, MinIO, Ceph, moto): keys live under the URL's prefix.

Uploads go up in bounded parts (multipart above one part's size, never the whole file in memory);
ranges are S3's own byte ranges; credentials come from boto3's standard chain (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, a profile or an instance role).
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

CHUNK = 1024 * 1024
# Each transfer holds at most about PART_BYTES * concurrency in memory, whatever the file's size.
TRANSFER = TransferConfig(
    multipart_threshold=8 * CHUNK, multipart_chunksize=8 * CHUNK, max_concurrency=4, max_io_queue=16
)


def parse_s3_url(url: str) -> tuple[str, str]:
    """s3://bucket/some/prefix -> ("bucket", "some/prefix/"); the prefix may be empty."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"not an S3 storage URL: {url!r}; use s3://bucket/optional/prefix")
    prefix = parts.path.strip("/")
    return parts.netloc, f"{prefix}/" if prefix else ""


def _client(endpoint_url: str | None, region: str) -> Any:
    # Path-style addressing: MinIO, moto and most self-hosted endpoints have no per-bucket host names.
    config = Config(
        region_name=region,
        signature_version="s3v4",
        s3={"addressing_style": "path" if endpoint_url else "auto"},
        retries={"max_attempts": 5, "mode": "standard"},
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)


class S3Store:
    def __init__(
        self, url: str, endpoint_url: str | None, region: str, presign_endpoint_url: str | None = None
    ) -> None:
        self.bucket, self.prefix = parse_s3_url(url)
        self.client = _client(endpoint_url, region)
        # Presigned URLs name the host the client will call, which may differ from the one workers use
        # (http://minio:9000 inside compose, https://s3.example.com outside).
        self.presigner = _client(presign_endpoint_url, region) if presign_endpoint_url else self.client

    def _key(self, key: str) -> str:
        if key.startswith("/") or any(part in ("", ".", "..") for part in key.split("/")):
            raise ValueError(f"storage key escapes the store: {key!r}")
        return self.prefix + key

    def put_file(self, key: str, source: Path) -> None:
        self.client.upload_file(str(source), self.bucket, self._key(key), Config=TRANSFER)
        source.unlink(missing_ok=True)

    def get_file(self, key: str, dest: Path) -> None:
        partial = dest.with_name(dest.name + ".partial")
        self.client.download_file(self.bucket, self._key(key), str(partial), Config=TRANSFER)
        partial.replace(dest)

    def iter_bytes(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        extra = {} if start == 0 and end is None else {"Range": f"bytes={start}-{'' if end is None else end}"}
        body = self.client.get_object(Bucket=self.bucket, Key=self._key(key), **extra)["Body"]
        try:
            yield from body.iter_chunks(CHUNK)
        finally:
            body.close()

    def size(self, key: str) -> int:
        return int(self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"])

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def list_keys(self, prefix: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix + prefix)
        return sorted(obj["Key"].removeprefix(self.prefix) for page in pages for obj in page.get("Contents", []))

    def presigned_url(self, key: str, ttl_s: float, filename: str, media_type: str) -> str | None:
        params = {
            "Bucket": self.bucket,
            "Key": self._key(key),
            "ResponseContentDisposition": f'attachment; filename="{filename}"',
            "ResponseContentType": media_type,
        }
        return str(self.presigner.generate_presigned_url("get_object", Params=params, ExpiresIn=int(ttl_s)))

    def healthy(self) -> bool:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError):  # unreachable, no bucket or no access: /readyz says not ready
            return False
        return True
