"""Zip checks shared by the API (before accepting an upload) and the worker (before extracting one).

Refuses what makes an archive hostile: absolute or `..` paths, links, too many entries, and too many
uncompressed bytes in total or per compressed byte (a zip bomb). Nothing here imports torch.
"""

import stat
import zipfile
from pathlib import Path, PurePosixPath

MAX_ENTRIES = 10_000
MAX_RATIO = 200


class UnsafeArchive(ValueError):
    """The archive would write outside its folder, carries links, or inflates beyond the limits."""


def check_zip(zf: zipfile.ZipFile, max_total_bytes: int) -> list[zipfile.ZipInfo]:
    """Every entry, checked; raises UnsafeArchive naming the first offending entry."""
    infos = zf.infolist()
    if len(infos) > MAX_ENTRIES:
        raise UnsafeArchive(f"the archive has {len(infos)} entries; at most {MAX_ENTRIES} are accepted")
    total = 0
    for info in infos:
        name = info.filename
        path = PurePosixPath(name.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts or "\x00" in name or (len(name) > 1 and name[1] == ":"):
            raise UnsafeArchive(f"archive entry {name[:200]!r} points outside the archive's folder")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UnsafeArchive(f"archive entry {name[:200]!r} is a symbolic link; links are not accepted")
        total += info.file_size
        if info.compress_size and info.file_size / info.compress_size > MAX_RATIO and info.file_size > 2**20:
            raise UnsafeArchive(f"archive entry {name[:200]!r} inflates more than {MAX_RATIO}x (a zip bomb?)")
    if total > max_total_bytes:
        raise UnsafeArchive(f"the archive inflates to {total} bytes; the limit is {max_total_bytes}")
    compressed = sum(info.compress_size for info in infos)
    if total > 2**20 and total > MAX_RATIO * max(compressed, 1):
        raise UnsafeArchive(
            f"the archive inflates {total // max(compressed, 1)}x in all, more than {MAX_RATIO}x (a zip bomb?)"
        )
    return infos


def safe_extract(archive: Path, dest: Path, max_total_bytes: int) -> None:
    """Extract a checked zip into `dest`, never writing outside it."""
    dest = dest.resolve()
    with zipfile.ZipFile(archive) as zf:
        for info in check_zip(zf, max_total_bytes):
            target = (dest / info.filename).resolve()
            if not target.is_relative_to(dest):
                raise UnsafeArchive(f"archive entry {info.filename[:200]!r} points outside the archive's folder")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, target.open("wb") as out:
                written = 0
                while chunk := src.read(1 << 20):
                    written += len(chunk)
                    if written > info.file_size:
                        raise UnsafeArchive(f"archive entry {info.filename[:200]!r} is larger than it declares")
                    out.write(chunk)
