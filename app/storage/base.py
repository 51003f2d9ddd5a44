"""What every artifact store offers: put a finished local file, read it back (whole or a range), delete."""

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol


class Store(Protocol):
    def put_file(self, key: str, source: Path) -> None:
        """Move (or upload) a finished local file under `key`; the source may be consumed."""

    def get_file(self, key: str, dest: Path) -> None:
        """Copy the object at `key` to a local path."""

    def iter_bytes(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Stream bytes [start, end] inclusive of the object at `key`."""

    def size(self, key: str) -> int: ...

    def delete(self, key: str) -> None: ...

    def healthy(self) -> bool: ...
