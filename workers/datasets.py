"""Datasets inside the child: load the files the worker fetched into arrays by input name (plus `labels`),
tokenize text lines with the model's own tokenizer, and cut them into evaluation batches.

Never unpickles: .npz is read with allow_pickle=False, safetensors by its own numpy loader."""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.schemas.datasets import LABELS
from app.schemas.errors import JobErrorCode
from workers.runtime import Feeds, PassFailed

MAX_TOKENS = 512


def load_dataset(
    path: Path, meta: Mapping[str, Any], inputs: Sequence[Mapping[str, Any]], tokenizer_root: Path | None
) -> Feeds:
    """The dataset's arrays by model input name, plus `labels` when it has them."""
    if meta["format"] == "npz":
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    if meta["format"] == "safetensors":
        from safetensors.numpy import load_file

        return dict(load_file(str(path)))
    if tokenizer_root is None:
        raise PassFailed(
            JobErrorCode.dataset_mismatch,
            f"dataset {meta['id']} is text, which needs the model's tokenizer, and the model has none",
        )
    return tokenize(path.read_text(encoding="utf-8"), inputs, tokenizer_root)


def tokenize(text: str, inputs: Sequence[Mapping[str, Any]], tokenizer_root: Path) -> Feeds:
    """One sample per non-empty line, truncated to the model's maximum length and padded to the longest
    line; `batches` then trims each batch to its own longest line."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_root), local_files_only=True, trust_remote_code=False)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    max_length = min(int(getattr(tokenizer, "model_max_length", MAX_TOKENS) or MAX_TOKENS), MAX_TOKENS)
    encoded = tokenizer(lines, padding="longest", truncation=True, max_length=max_length, return_tensors="np")
    feeds: Feeds = {}
    for item in inputs:
        name = str(item["name"])
        if name not in encoded:
            raise PassFailed(
                JobErrorCode.dataset_mismatch,
                f"the model's tokenizer gives {sorted(encoded)}, not the "
                f"model input {name!r}; upload an .npz with every input",
            )
        feeds[name] = np.asarray(encoded[name]).astype(item["dtype"])
    return feeds


def batches(
    data: Feeds, input_names: Sequence[str], batch_size: int, limit: int | None = None, per_batch_padding: bool = False
) -> list[tuple[Feeds, np.ndarray | None]]:
    """(inputs, labels) batches in order over the first `limit` samples. With per_batch_padding (tokenized
    text), each batch drops the trailing columns its attention mask leaves unused."""
    total = len(data[input_names[0]]) if limit is None else min(limit, len(data[input_names[0]]))
    mask_name = next((n for n in input_names if "mask" in n.lower() and data[n].ndim == 2), None)
    if not per_batch_padding:
        mask_name = None
    out: list[tuple[Feeds, np.ndarray | None]] = []
    for start in range(0, total, batch_size):
        stop = min(start + batch_size, total)
        feeds = {n: data[n][start:stop] for n in input_names}
        if mask_name is not None:
            used = int(np.flatnonzero(feeds[mask_name].any(axis=0)).max(initial=0)) + 1
            width = feeds[mask_name].shape[1]
            feeds = {n: (a[:, :used] if a.ndim >= 2 and a.shape[1] == width else a) for n, a in feeds.items()}
        labels = data[LABELS][start:stop] if LABELS in data else None
        out.append((feeds, labels))
    return out
