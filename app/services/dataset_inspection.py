"""Tell what an uploaded dataset is and summarise it (arrays, samples, labels) without loading it and
without unpickling anything: .npz members are read by their .npy headers, safetensors by its JSON
header, text as UTF-8 lines. Arrays are loaded only in the worker."""

import json
import math
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.archives import UnsafeArchive, check_zip
from app.errors import InvalidDataset, UnsafeDataset, UnsupportedDatasetFormat
from app.schemas.datasets import LABELS

ACCEPTED = (
    "an .npz of named arrays (numpy.savez, one array per model input plus optional integer "
    "'labels', the first axis being the samples), a .safetensors file of the same arrays, or a .txt "
    "file of UTF-8 text, one sample a line (for a Hugging Face model with a tokenizer)"
)
_SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
}
_MAX_HEADER = 100 * 1024 * 1024
MAX_ELEMENTS = 2**50
"""Past any upload's size: a shape declaring more elements is crafted, whatever its dtype."""


@dataclass
class DatasetInfo:
    format: str
    arrays: list[dict[str, Any]]
    samples: int


def inspect_dataset(path: Path, filename: str, max_unpacked_bytes: int) -> DatasetInfo:
    """Detect the format of the dataset at `path` and summarise it; 422 errors say what to upload instead."""
    with path.open("rb") as fh:
        head = fh.read(16)
    lowered = filename.lower()
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        raise UnsafeDataset(
            f"{filename!r} is a Python pickle, and loading a pickle runs the code it carries. Upload {ACCEPTED}."
        )
    if zipfile.is_zipfile(path):
        return DatasetInfo("npz", *_npz(path, filename, max_unpacked_bytes))
    if head.startswith(b"\x93NUMPY"):
        raise UnsupportedDatasetFormat(
            f"{filename!r} is a single .npy array, which has no input name; save "
            "named arrays with numpy.savez('data.npz', x=..., labels=...)"
        )
    if lowered.endswith(".txt"):
        return DatasetInfo("text", [], _text_lines(path, filename))
    if len(head) >= 9 and head[8:9] == b"{":
        return DatasetInfo("safetensors", *_safetensors(path, filename))
    raise UnsupportedDatasetFormat(f"{filename!r} is not a dataset format Squeeze reads. Upload {ACCEPTED}.")


def _summary(arrays: list[dict[str, Any]], filename: str) -> tuple[list[dict[str, Any]], int]:
    if not arrays:
        raise InvalidDataset(f"{filename!r} holds no arrays. Upload {ACCEPTED}.")
    for array in arrays:
        if not array["shape"]:
            raise InvalidDataset(
                f"array {array['name']!r} in {filename!r} is a scalar; every array needs a first axis of samples"
            )
    counts = {a["name"]: a["shape"][0] for a in arrays}
    if len(set(counts.values())) > 1:
        raise InvalidDataset(
            f"the arrays of {filename!r} have different sample counts (first axis) "
            f"{counts}; give every array, labels included, one row per sample"
        )
    samples = next(iter(counts.values()))
    if samples == 0:
        raise InvalidDataset(f"{filename!r} has no samples (its arrays' first axis is 0)")
    labels = next((a for a in arrays if a["name"] == LABELS), None)
    if labels is not None and (len(labels["shape"]) != 1 or np.dtype(labels["dtype"]).kind not in "iu"):
        raise InvalidDataset(
            f"'{LABELS}' in {filename!r} is {labels['dtype']} of shape {labels['shape']}; "
            "it must hold one integer class id per sample (shape [samples])"
        )
    return arrays, int(samples)


def elements(shape: Any, name: str, filename: str) -> int:
    """The element count of `shape`, in Python integers (numpy's int64 would wrap 2^32 x 2^32 to 0): every
    dimension a non-negative integer, the product within what one upload could hold."""
    dims = list(shape)
    if not all(isinstance(d, int) and 0 <= d < MAX_ELEMENTS for d in dims):
        raise InvalidDataset(f"array {name!r} in {filename!r} has shape {dims[:8]}; dimensions must be 0 or more")
    count = math.prod(dims)
    if count > MAX_ELEMENTS:
        raise InvalidDataset(f"array {name!r} in {filename!r} declares {count} elements, more than any upload holds")
    return int(count)


def _refuse_overlaps(arrays: list[dict[str, Any]], filename: str) -> None:
    """safetensors tensors must not share bytes: overlapping offsets are a crafted file."""
    spans = sorted((a["offsets"], a["name"]) for a in arrays)
    for ((_, end), first), ((start, _), second) in zip(spans, spans[1:], strict=False):
        if start < end:
            raise InvalidDataset(f"tensors {first!r} and {second!r} in {filename!r} overlap in the file")


def _npz(path: Path, filename: str, max_unpacked_bytes: int) -> tuple[list[dict[str, Any]], int]:
    arrays = []
    try:
        with zipfile.ZipFile(path) as zf:
            for info in check_zip(zf, max_unpacked_bytes):
                if info.is_dir():
                    continue
                if not info.filename.endswith(".npy"):
                    raise InvalidDataset(
                        f"{filename!r} is a zip with {info.filename[:200]!r}, which is not "
                        f"a .npy array. Upload {ACCEPTED}."
                    )
                with zf.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    read = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = read(member)
                name = info.filename[:-4]
                if dtype.hasobject:
                    raise UnsafeDataset(
                        f"array {name!r} in {filename!r} holds Python objects, which only "
                        "unpickling can read; save numeric arrays (e.g. float32, int64)"
                    )
                if dtype.names is not None or dtype.kind not in "biuf" or dtype.itemsize > 8:
                    raise InvalidDataset(
                        f"array {name!r} in {filename!r} has dtype {dtype}; save plain "
                        "numeric or bool arrays (float32, int64, ...)"
                    )
                need = elements(shape, name, filename) * dtype.itemsize
                if info.file_size < need:
                    raise InvalidDataset(
                        f"array {name!r} in {filename!r} is truncated: {info.file_size} "
                        f"bytes for shape {list(shape)} of {dtype}"
                    )
                arrays.append({"name": name, "dtype": dtype.name, "shape": [int(d) for d in shape]})
    except UnsafeArchive as exc:
        raise UnsafeDataset(f"{filename!r} is an unsafe archive: {exc}") from exc
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, SyntaxError, RecursionError) as exc:
        raise InvalidDataset(f"{filename!r} is not a readable .npz ({exc}). Upload {ACCEPTED}.") from exc
    return _summary(arrays, filename)


def _safetensors(path: Path, filename: str) -> tuple[list[dict[str, Any]], int]:
    size = path.stat().st_size
    try:
        with path.open("rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            if length > min(_MAX_HEADER, size - 8):
                raise ValueError(f"header length {length} does not fit the file of {size} bytes")
            header = json.loads(fh.read(length))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        data_bytes = size - 8 - length
        arrays = []
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            dtype = _SAFETENSORS_DTYPES.get(entry.get("dtype"))
            if dtype is None:
                raise InvalidDataset(
                    f"tensor {name!r} in {filename!r} has dtype {entry.get('dtype')!r}; "
                    f"save one of {sorted(_SAFETENSORS_DTYPES)}"
                )
            shape = [int(d) for d in entry["shape"]]
            start, end = (int(o) for o in entry["data_offsets"])
            expected = elements(shape, name, filename) * np.dtype(dtype).itemsize
            if not 0 <= start <= end <= data_bytes or end - start != expected:
                raise ValueError(f"tensor {name!r} has offsets {[start, end]} that do not match its shape and the file")
            arrays.append({"name": name, "dtype": dtype, "shape": shape, "offsets": (start, end)})
        _refuse_overlaps(arrays, filename)
        for array in arrays:
            del array["offsets"]
    except InvalidDataset:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, struct.error, RecursionError, OverflowError) as exc:
        raise InvalidDataset(f"{filename!r} is not a readable safetensors file ({exc}). Upload {ACCEPTED}.") from exc
    return _summary(arrays, filename)


def _text_lines(path: Path, filename: str) -> int:
    count = 0
    try:
        with path.open(encoding="utf-8", newline=None) as fh:
            for line in fh:
                if line.strip():
                    count += 1
    except UnicodeDecodeError as exc:
        raise InvalidDataset(
            f"{filename!r} is not UTF-8 text (byte {exc.start}); save it as UTF-8, one sample a line"
        ) from exc
    if count == 0:
        raise InvalidDataset(f"{filename!r} has no non-empty line; give one text sample a line")
    return count
