"""The artifact store: one interface; `open_store(url)` picks the implementation from STORAGE_URL."""

from app.storage.base import Store
from app.storage.local import LocalStore


def open_store(url: str) -> Store:
    if url.startswith("file://"):
        return LocalStore(url.removeprefix("file://"))
    raise ValueError(f"unsupported STORAGE_URL scheme in {url!r}: use file:///absolute/path")


__all__ = ["Store", "LocalStore", "open_store"]
