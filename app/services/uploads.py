"""Receive an upload by streaming it to a temporary file: hashed while it arrives, never held in memory,
cut off with 413 as soon as it passes the size limit.

Accepts multipart/form-data (the file in field `file`, small text fields beside it, e.g. `spec`) or a
raw body (`Content-Type: application/octet-stream`, name from `?filename=`). An ONNX model with external
data comes as the .onnx in `file` and each data file in a `data` field (`-F file=@m.onnx -F data=@m.onnx.data`):
they are stored together as one zip, exactly as if the client had zipped them.
"""

import contextlib
import hashlib
import os
import re
import time
import uuid
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from app.errors import PayloadTooLarge, SqueezeError, ValidationFailed

MAX_FIELD_BYTES = 1 << 20
MAX_PART_HEADER_BYTES = 16 << 10
MAX_LENGTH_DIGITS = 19
"""More digits than any real body size; int() of thousands of digits raises (and costs quadratic time)."""


@dataclass
class ReceivedUpload:
    path: Path
    filename: str
    sha256: str
    size_bytes: int
    fields: dict[str, str] = field(default_factory=dict)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def clean_filename(raw: str) -> str:
    """A display name only (storage uses server-made keys): no folders, no control characters."""
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = re.sub(r"[\x00-\x1f\x7f]", "", name).strip()[:200]
    return name or "upload"


class _FileSink:
    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.fh = path.open("wb")
        self.hash = hashlib.sha256()
        self.size = 0
        self.max_bytes = max_bytes

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            raise PayloadTooLarge(
                f"the upload passed the limit of {self.max_bytes} bytes; "
                "upload a smaller model or raise MAX_UPLOAD_BYTES"
            )
        self.hash.update(data)
        self.fh.write(data)


async def receive_upload(
    stream: AsyncIterator[bytes],
    content_type: str,
    tmp_dir: Path,
    max_bytes: int,
    filename_hint: str | None = None,
    declared_length: int | None = None,
) -> ReceivedUpload:
    """Stream the request body into tmp_dir; the caller owns (and must discard or keep) the file."""
    if declared_length is not None and declared_length > max_bytes + MAX_FIELD_BYTES:
        raise PayloadTooLarge(f"Content-Length {declared_length} is past the limit of {max_bytes} bytes")
    tmp_dir.mkdir(parents=True, exist_ok=True)
    sink = _FileSink(tmp_dir / f"upload-{uuid.uuid4().hex}", max_bytes)
    try:
        mime, params = parse_options_header(content_type or "")
        data: list[tuple[str, _FileSink]] = []
        if mime == b"multipart/form-data":
            filename, fields = await _receive_multipart(stream, params.get(b"boundary", b""), sink, data)
        elif mime in (b"application/octet-stream", b""):
            async for chunk in stream:
                sink.write(chunk)
            filename, fields = filename_hint or "upload", {}
        else:
            raise ValidationFailed(
                f"unsupported Content-Type {mime.decode(errors='replace')!r}: send "
                "multipart/form-data with the model in field 'file' (curl -F file=@model.onnx)"
            )
        sink.fh.close()
        if sink.size == 0:
            raise ValidationFailed("the upload is empty: send the model in multipart field 'file'")
        if data:
            return _bundle(sink, clean_filename(filename), data, tmp_dir, fields)
        return ReceivedUpload(sink.path, clean_filename(filename), sink.hash.hexdigest(), sink.size, fields)
    except BaseException:
        sink.fh.close()
        sink.path.unlink(missing_ok=True)
        raise
    finally:
        for _, part in data:
            part.fh.close()
            part.path.unlink(missing_ok=True)


def _bundle(
    model: _FileSink, filename: str, data: list[tuple[str, _FileSink]], tmp_dir: Path, fields: dict[str, str]
) -> ReceivedUpload:
    """The .onnx and its data files as one stored zip (the model's own folder), hashed as stored."""
    if not filename.lower().endswith(".onnx"):
        raise ValidationFailed(f"'data' fields go with an ONNX model in 'file'; {filename!r} is not a .onnx file")
    names = [clean_filename(name) for name, _ in data]
    if len(set(names) | {filename}) != len(names) + 1:
        raise ValidationFailed("the 'file' and 'data' parts need distinct file names (the model's locations)")
    path = tmp_dir / f"upload-{uuid.uuid4().hex}.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.write(model.path, filename)
        for name, (_, part) in zip(names, data, strict=True):
            part.fh.close()
            zf.write(part.path, name)
    model.path.unlink(missing_ok=True)
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return ReceivedUpload(path, f"{filename[: -len('.onnx')]}.zip", digest.hexdigest(), path.stat().st_size, fields)


async def _receive_multipart(
    stream: AsyncIterator[bytes], boundary: bytes, sink: _FileSink, extras: list[tuple[str, _FileSink]]
) -> tuple[str, dict[str, str]]:
    """The `file` part into `sink`, each `data` part into a sink of its own appended to `extras` (all of them
    within the one size limit), and the small text fields."""
    if not boundary:
        raise ValidationFailed("multipart body without a boundary in Content-Type")
    fields: dict[str, bytearray] = {}
    headers: dict[bytes, bytes] = {}
    current = {"field": b"", "value": b""}  # the header line being parsed
    part: dict[str, str | None] = {"name": None}
    found: dict[str, str] = {}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        current["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        current["value"] += data[start:end]

    def on_header_end() -> None:
        headers[current["field"].lower()] = current["value"]
        current["field"], current["value"] = b"", b""

    def on_headers_finished() -> None:
        _, disp = parse_options_header(headers.get(b"content-disposition", b""))
        name = disp.get(b"name", b"").decode("utf-8", "replace")
        part["name"] = name
        if name == "file":
            if "file" in found:
                raise ValidationFailed("more than one 'file' field: upload one model per request")
            found["file"] = disp.get(b"filename", b"upload").decode("utf-8", "replace")
        elif name == "data":
            used = sink.size + sum(part.size for _, part in extras)
            target = sink.path.with_name(f"{sink.path.name}-data{len(extras)}")
            extras.append(
                (disp.get(b"filename", b"data").decode("utf-8", "replace"), _FileSink(target, sink.max_bytes - used))
            )
        else:
            fields[name] = bytearray()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if part["name"] == "file":
            sink.write(data[start:end])
        elif part["name"] == "data":
            extras[-1][1].write(data[start:end])
        else:
            buf = fields[str(part["name"])]
            buf.extend(data[start:end])
            if sum(len(v) for v in fields.values()) > MAX_FIELD_BYTES:
                raise PayloadTooLarge(f"the form fields beside 'file' pass {MAX_FIELD_BYTES} bytes in all")

    def on_part_end() -> None:
        headers.clear()
        part["name"] = None

    # The parser bounds each part's headers (count and line length), so a hostile header cannot grow memory.
    parser = MultipartParser(
        boundary,
        {  # type: ignore[arg-type]
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
        max_header_size=MAX_PART_HEADER_BYTES,
    )
    try:
        async for chunk in stream:
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        raise ValidationFailed(
            f"the multipart body is malformed ({exc}); send the model as "
            f"-F file=@model.onnx with part headers under {MAX_PART_HEADER_BYTES} bytes"
        ) from exc
    if "file" not in found:
        raise ValidationFailed("no 'file' field in the multipart body: send the model as -F file=@model.onnx")
    return found["file"], {k: v.decode("utf-8", "replace") for k, v in fields.items()}


async def read_small_body(
    stream: AsyncIterator[bytes], declared_length: int | None, limit: int = MAX_FIELD_BYTES
) -> bytes:
    """A JSON request body, refused with 413 past `limit` bytes (declared or streamed), never buffered
    past it."""
    if declared_length is not None and declared_length > limit:
        raise PayloadTooLarge(f"Content-Length {declared_length} is past the {limit} bytes a JSON body may have")
    body = bytearray()
    async for chunk in stream:
        body.extend(chunk)
        if len(body) > limit:
            raise PayloadTooLarge(f"the JSON body passed the {limit} bytes it may have")
    return bytes(body)


def declared_length(value: str | None) -> int | None:
    """The Content-Length header as a number; a malformed one is a 400."""
    if value is None:
        return None
    digits = value.strip()
    if not (digits.isascii() and digits.isdigit()) or len(digits) > MAX_LENGTH_DIGITS:
        raise SqueezeError(f"Content-Length {value[:40]!r} is not a number of at most {MAX_LENGTH_DIGITS} digits")
    return int(digits)


STALE_UPLOAD_S = 3600.0
"""A temporary upload untouched this long was left by a crashed process: a live one is being written."""


def remove_stale(tmp_dir: Path, now: float | None = None) -> None:
    """Delete temporary uploads left by a crashed process (called at start-up). Only old ones: the API's
    other processes (and replicas sharing the home) may be receiving uploads into the same folder."""
    cutoff = (time.time() if now is None else now) - STALE_UPLOAD_S
    if tmp_dir.is_dir():
        for leftover in tmp_dir.glob("upload-*"):
            with contextlib.suppress(FileNotFoundError):  # another process removed it first
                if leftover.stat().st_mtime < cutoff:
                    os.unlink(leftover)
