"""The artifact store: one interface; `open_store(settings)` picks the implementation from STORAGE_URL."""

from app.settings import Settings
from app.storage.base import Store
from app.storage.local import LocalStore


def open_store(settings: Settings) -> Store:
    url = settings.effective_storage_url
    if url.startswith("file://"):
        return LocalStore(url.removeprefix("file://"))
    if url.startswith("s3://"):
        from app.storage.s3 import S3Store  # boto3 loads only for a bucket

        return S3Store(url, settings.s3_endpoint_url, settings.s3_region, settings.s3_presign_endpoint_url)
    raise ValueError(f"unsupported STORAGE_URL scheme in {url!r}: use file:///absolute/path or s3://bucket/prefix")


__all__ = ["Store", "LocalStore", "open_store"]
