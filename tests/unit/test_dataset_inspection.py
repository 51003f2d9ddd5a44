"""Crafted safetensors dataset headers are refused at upload (422 invalid_dataset), never accepted to fail
later or escape as a 500: shapes counted in Python integers, offsets that overlap."""

import json
import struct
from pathlib import Path

import pytest

from app.errors import InvalidDataset
from app.services.dataset_inspection import inspect_dataset


def _safetensors(path: Path, header: dict | bytes, data: bytes = b"") -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


@pytest.mark.parametrize(
    ("case", "header", "data"),
    [
        ("2^64 dimension", {"x": {"dtype": "F32", "shape": [2**64], "data_offsets": [0, 0]}}, b""),
        ("negative dimension", {"x": {"dtype": "F32", "shape": [-4, 1], "data_offsets": [0, 16]}}, b"\0" * 16),
        # int64 arithmetic wraps 2^32 * 2^32 * 4 bytes to 0, which matched empty offsets
        ("2^32 x 2^32", {"x": {"dtype": "F32", "shape": [2**32, 2**32], "data_offsets": [0, 0]}}, b""),
        (
            "overlapping offsets",
            {
                "x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                "y": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]},
            },
            b"\0" * 24,
        ),
        ("deeply nested header", b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", b""),
    ],
)
def test_crafted_safetensors_headers_are_refused(tmp_path: Path, case: str, header: dict | bytes, data: bytes) -> None:
    path = _safetensors(tmp_path / "d.safetensors", header, data)
    with pytest.raises(InvalidDataset):
        inspect_dataset(path, "d.safetensors", 10**9)


def test_a_plain_safetensors_dataset_is_read(tmp_path: Path) -> None:
    header = {"x": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}
    info = inspect_dataset(_safetensors(tmp_path / "d.safetensors", header, b"\0" * 16), "d.safetensors", 10**9)
    assert info.samples == 2 and info.arrays[0]["shape"] == [2, 2], info
