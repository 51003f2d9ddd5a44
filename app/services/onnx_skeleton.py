"""Read an ONNX model's graph without its weights, so inspecting an upload costs memory for the graph
only, whatever the file's size.

The protobuf wire format is walked field by field from the open file: every field is copied except the
data of tensors (raw_data and the typed data fields), which is skipped with a seek and only its length
noted; messages that can hold tensors (graph, node, attribute, sparse tensor, function, training info)
are walked the same way, everything else is copied as it is. The copy is then parsed by onnx as a
`ModelProto` whose tensors keep their names, types, shapes and data locations but hold no data.
"""

from dataclasses import dataclass, field
from typing import IO

import onnx

MAX_SKELETON_BYTES = 64 << 20
"""The most of a file kept when its tensor data is left out: a graph past it is refused."""
MAX_DEPTH = 64
"""Nesting of messages (subgraphs of subgraphs): deeper is crafted, and protobuf would refuse it too."""

# Which length-delimited fields are messages that can hold tensors, per message kind (onnx.proto3).
_NESTED: dict[str, dict[int, str]] = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "function": {7: "node", 11: "attribute"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {},
}
_TENSOR_DATA = {4, 5, 6, 7, 9, 10, 11}
"""TensorProto's float_data, int32_data, string_data, int64_data, raw_data, double_data, uint64_data."""
_RAW_DATA = 9


class SkeletonError(ValueError):
    """The bytes are not a well-formed protobuf message (truncated, a bad length or wire type)."""


class SkeletonTooLarge(ValueError):
    """The graph without its tensor data is past MAX_SKELETON_BYTES."""


@dataclass
class Skeleton:
    """The model without tensor data, and the raw_data length each tensor held (name, dims, type, length)."""

    model: onnx.ModelProto
    raw_lengths: list[tuple[onnx.TensorProto, int]] = field(default_factory=list)


class _Reader:
    def __init__(self, fh: IO[bytes]) -> None:
        self.fh, self.pos, self.kept = fh, 0, 0
        self.raw_lengths: list[tuple[bytes, int]] = []

    def read(self, n: int) -> bytes:
        data = self.fh.read(n)
        if len(data) != n:
            raise SkeletonError("the file ends inside a message")
        self.pos += n
        return data

    def skip(self, n: int) -> None:
        self.fh.seek(n, 1)
        self.pos += n

    def varint(self, end: int) -> tuple[int, bytes]:
        raw = bytearray()
        value = shift = 0
        while True:
            if self.pos >= end or len(raw) == 10:
                raise SkeletonError("a varint runs past its message")
            byte = self.read(1)[0]
            raw.append(byte)
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value, bytes(raw)

    def keep(self, data: bytes) -> bytes:
        self.kept += len(data)
        if self.kept > MAX_SKELETON_BYTES:
            raise SkeletonTooLarge(f"the graph without its weights passes {MAX_SKELETON_BYTES} bytes")
        return data

    def message(self, kind: str, end: int, depth: int) -> bytes:
        """The message from here to `end` with its tensor data left out."""
        if depth > MAX_DEPTH:
            raise SkeletonError(f"messages nest more than {MAX_DEPTH} deep")
        out = bytearray()
        raw_length = None
        while self.pos < end:
            key, tag = self.varint(end)
            number, wire = key >> 3, key & 7
            dropped = kind == "tensor" and number in _TENSOR_DATA
            if wire == 0:
                value = self.varint(end)[1]
            elif wire in (1, 5):
                value = self.read(self._bounded(8 if wire == 1 else 4, end))
            elif wire == 2:
                length, prefix = self.varint(end)
                stop = self.pos + self._bounded(length, end)
                if dropped:
                    self.skip(length)
                    raw_length = length if number == _RAW_DATA else raw_length
                    continue
                nested = _NESTED[kind].get(number)
                body = self.message(nested, stop, depth + 1) if nested else self.keep(self.read(length))
                value = _varint_bytes(len(body)) + body if nested else prefix + body
            else:
                raise SkeletonError(f"wire type {wire} is not used by ONNX")
            if not dropped:
                out += tag + value
        if self.pos != end:
            raise SkeletonError("a field runs past its message")
        if raw_length is not None:
            self.raw_lengths.append((bytes(out), raw_length))
        return bytes(out)

    def _bounded(self, length: int, end: int) -> int:
        if self.pos + length > end:
            raise SkeletonError("a field is longer than what is left of its message")
        return length


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_skeleton(fh: IO[bytes], size: int) -> Skeleton:
    """The ONNX model in the `size` bytes from `fh`'s position, without its tensor data. Raises
    SkeletonError on malformed bytes, SkeletonTooLarge past MAX_SKELETON_BYTES, and protobuf's
    DecodeError where the fields kept do not parse."""
    reader = _Reader(fh)
    body = reader.message("model", size, 0)
    model = onnx.ModelProto.FromString(body)
    return Skeleton(model, [(onnx.TensorProto.FromString(t), n) for t, n in reader.raw_lengths])
