"""A store in a local folder: keys are relative paths under one root, written by atomic rename."""

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

CHUNK = 1024 * 1024


class LocalStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"storage key escapes the store: {key!r}")
        return path

    def put_file(self, key: str, source: Path) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".partial")
        try:
            os.replace(source, tmp)
        except OSError:  # another filesystem: copy instead of rename
            shutil.copyfile(source, tmp)
        os.replace(tmp, dest)

    def get_file(self, key: str, dest: Path) -> None:
        shutil.copyfile(self._path(key), dest)

    def iter_bytes(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        path = self._path(key)
        last = path.stat().st_size - 1 if end is None else end
        with path.open("rb") as fh:
            fh.seek(start)
            remaining = last - start + 1
            while remaining > 0:
                chunk = fh.read(min(CHUNK, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                yield chunk

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list_keys(self, prefix: str) -> list[str]:
        base = self._path(prefix) if prefix.endswith("/") else self._path(prefix).parent
        if not base.is_dir():
            return []
        keys = (p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())
        return sorted(k for k in keys if k.startswith(prefix) and not k.endswith(".partial"))

    def presigned_url(self, key: str, ttl_s: float, filename: str, media_type: str) -> str | None:
        return None  # a folder has no URL of its own: the API streams it

    def healthy(self) -> bool:
        self.root.mkdir(parents=True, exist_ok=True)
        return os.access(self.root, os.W_OK)
