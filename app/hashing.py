"""The sha256 of a file, read in chunks: how every stored file's digest is computed (uploads hash as they
stream, with the same algorithm)."""

import hashlib
from pathlib import Path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
