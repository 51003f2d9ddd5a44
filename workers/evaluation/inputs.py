"""Evaluation inputs made from a model's input signature when no dataset is given.

Values are valid for their role: float inputs are standard normal, token ids lie inside the
vocabulary, attention masks have rows of different lengths (so padding is exercised), token type
ids are zero. Seeded, so a report can be reproduced.
"""

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from workers.runtime import Feeds


def make_batch(
    inputs: Sequence[Mapping[str, Any]],
    shapes: Mapping[str, list[int]],
    rng: np.random.Generator,
    vocab_size: int | None,
) -> Feeds:
    feeds: Feeds = {}
    lengths: np.ndarray | None = None
    for item in inputs:
        shape = shapes[item["name"]]
        if len(shape) >= 2 and "int" in item["dtype"]:
            batch, seq = shape[0], shape[1]
            lengths = rng.integers(max(1, seq // 4), seq + 1, size=batch)
            lengths[0] = seq
            break
    for item in inputs:
        name, dtype, shape = item["name"], np.dtype(item["dtype"]), shapes[item["name"]]
        lowered = name.lower()
        if dtype.kind == "f":
            feeds[name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[name] = rng.integers(0, 2, size=shape).astype(bool)
        elif "mask" in lowered and lengths is not None and len(shape) >= 2:
            feeds[name] = (np.arange(shape[1])[None, :] < lengths[:, None]).astype(dtype)
        elif "type" in lowered or "segment" in lowered:
            feeds[name] = np.zeros(shape, dtype=dtype)
        elif "position" in lowered and len(shape) >= 2:
            feeds[name] = np.broadcast_to(np.arange(shape[1], dtype=dtype), shape).copy()
        else:
            high = vocab_size or 2
            ids = rng.integers(min(high - 1, 1000) if high > 1000 else 0, high, size=shape).astype(dtype)
            if lengths is not None and len(shape) >= 2:
                ids[np.arange(shape[1])[None, :] >= lengths[:, None]] = 0
            feeds[name] = ids
    return feeds


def make_batches(
    inputs: Sequence[Mapping[str, Any]],
    shapes: Mapping[str, list[int]],
    samples: int,
    seed: int,
    vocab_size: int | None,
) -> list[Feeds]:
    """Enough batches of the resolved shapes to cover `samples` samples."""
    rng = np.random.default_rng(seed)
    batch = max(1, next(iter(shapes.values()))[0]) if shapes else 1
    return [make_batch(inputs, shapes, rng, vocab_size) for _ in range(math.ceil(samples / batch))]


def with_batch(
    inputs: Sequence[Mapping[str, Any]], shapes: Mapping[str, list[int]], batch_size: int
) -> dict[str, list[int]]:
    """The shapes with a new batch size on every input whose first axis is dynamic."""
    out = {}
    for item in inputs:
        shape = list(shapes[item["name"]])
        first = (item.get("shape") or [None])[0]
        if not (isinstance(first, int) and first > 0):
            shape[0] = batch_size
        out[item["name"]] = shape
    return out
