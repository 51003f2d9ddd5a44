"""What every artifact store offers: put a finished local file, read it back (whole or a range), list,
delete, and (where the store can) a short-lived URL a client downloads from directly."""

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol


class Store(Protocol):
    def put_file(self, key: str, source: Path) -> None:
        """Move (or upload) a finished local file under `key`; the source is consumed."""

    def get_file(self, key: str, dest: Path) -> None:
        """Copy the object at `key` to a local path."""

    def iter_bytes(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Stream bytes [start, end] inclusive of the object at `key`."""

    def size(self, key: str) -> int: ...

    def delete(self, key: str) -> None: ...

    def list_keys(self, prefix: str) -> list[str]:
        """Every key under `prefix` (a folder-like prefix such as `jobs/job_x/`), sorted."""

    def presigned_url(self, key: str, ttl_s: float, filename: str, media_type: str) -> str | None:
        """A URL that serves the object to anyone holding it for `ttl_s` seconds, or None if this store
        cannot make one (the local folder), in which case the API streams the object itself."""

    def healthy(self) -> bool: ...
