"""Datasets as the API shows them, and the rules that tie a dataset to a job: which spec fields reference
one (any `dataset_id`), whether it fits the model, and the evaluation shapes it implies. Shared by the
API (checks at submit) and the worker (loads what the spec references), so both read the spec alike."""

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from app.schemas.common import TensorInfo
from app.schemas.shapes import dimension_name

DatasetFormat = Literal["npz", "safetensors", "text"]
LABELS = "labels"
DEFAULT_EVAL_BATCH = 32


class DatasetOut(BaseModel):
    id: str
    filename: str
    format: DatasetFormat
    sha256: str
    size_bytes: int
    arrays: list[TensorInfo] = Field(
        description="named arrays, the first axis is the sample axis; empty for "
        "text, which is tokenized in the worker with the model's own tokenizer"
    )
    samples: int
    has_labels: bool = Field(description="an integer `labels` array is present (class ids, for accuracy)")
    created_at: datetime


def dataset_refs(spec: Any, path: str = "") -> list[tuple[str, str]]:
    """Every (field path, dataset id) in a job spec: any field named `dataset_id`, at any depth."""
    found: list[tuple[str, str]] = []
    if isinstance(spec, Mapping):
        for key, value in spec.items():
            where = f"{path}.{key}" if path else str(key)
            if key == "dataset_id" and isinstance(value, str):
                found.append((where, value))
            else:
                found.extend(dataset_refs(value, where))
    elif isinstance(spec, list | tuple):
        for index, value in enumerate(spec):
            found.extend(dataset_refs(value, f"{path}.{index}" if path else str(index)))
    return found


def check_fit(dataset: Mapping[str, Any], model: Mapping[str, Any]) -> list[str]:
    """What keeps `dataset` from feeding `model` (empty when it fits): array names equal to the model's
    input names (plus optional integer `labels`), same dtypes and ranks, fixed dimensions equal, and one
    size per named dimension (each unnamed one fits on its own). A text dataset needs a Hugging Face model
    that ships its tokenizer."""
    inputs = {str(i["name"]): i for i in model["inputs"]}
    if dataset["format"] == "text":
        if model["format"] == "hf_folder" and model.get("details", {}).get("has_tokenizer"):
            return []
        return [
            f"dataset {dataset['id']} is text lines, which are tokenized with the model's own tokenizer, "
            f"but the model (format {model['format']!r}) has none; upload a Hugging Face folder with its "
            f"tokenizer files, or an .npz with arrays {sorted(inputs)}"
        ]
    arrays = {str(a["name"]): a for a in dataset["arrays"]}
    problems: list[str] = []
    missing = sorted(set(inputs) - set(arrays))
    extra = sorted(set(arrays) - set(inputs) - {LABELS})
    if missing:
        problems.append(
            f"dataset {dataset['id']} has no array for model input(s) {missing}; its arrays are "
            f"{sorted(arrays)}: name one array after each input {sorted(inputs)}, plus optional "
            f"'{LABELS}'"
        )
    if extra:
        problems.append(
            f"dataset {dataset['id']} has array(s) {extra} that match no model input; the "
            f"model's inputs are {sorted(inputs)} ('{LABELS}' is the only other name allowed)"
        )
    symbols: dict[str, tuple[int, str]] = {}
    for name in sorted(set(inputs) & set(arrays)):
        want, got = inputs[name], arrays[name]
        if want["dtype"] != got["dtype"]:
            problems.append(
                f"array {name!r} is {got['dtype']}, but the model's input {name!r} is "
                f"{want['dtype']}; save it with .astype('{want['dtype']}')"
            )
        shape, dims = want.get("shape"), list(got["shape"])
        if shape is None:
            continue
        if len(shape) != len(dims):
            problems.append(
                f"array {name!r} has shape {dims} (rank {len(dims)}), but the model's input "
                f"{name!r} has rank {len(shape)} ({shape}), the first axis being the samples"
            )
            continue
        for axis, (model_dim, size) in enumerate(zip(shape, dims, strict=True)):
            if axis == 0:
                continue
            if isinstance(model_dim, int) and model_dim > 0 and model_dim != size:
                problems.append(
                    f"array {name!r} has size {size} on axis {axis}, but the model's input "
                    f"{name!r} is fixed to {model_dim} there (shape {shape})"
                )
            elif (symbol := dimension_name(model_dim)) is not None:
                seen = symbols.setdefault(symbol, (size, name))
                if seen[0] != size:
                    problems.append(
                        f"arrays {seen[1]!r} and {name!r} disagree on dimension {symbol!r}: {seen[0]} vs {size}"
                    )
    labels = arrays.get(LABELS)
    if labels is not None and (len(labels["shape"]) != 1 or np.dtype(labels["dtype"]).kind not in "iu"):
        problems.append(
            f"'{LABELS}' must be one integer class id per sample (shape [samples]), not "
            f"{labels['dtype']} of shape {labels['shape']}"
        )
    return problems


def eval_batch_size(model_inputs: Sequence[Mapping[str, Any]], given: Mapping[str, Sequence[int]] | None) -> int:
    """The evaluation batch size: a fixed first axis, else the batch of input_shapes, else 32."""
    first = (model_inputs[0].get("shape") or [None])[0] if model_inputs else None
    if isinstance(first, int) and first > 0:
        return first
    for item in model_inputs:
        if given and item["name"] in given:
            return int(given[item["name"]][0])
    return DEFAULT_EVAL_BATCH


def shapes_from_dataset(
    model_inputs: Sequence[Mapping[str, Any]],
    given: Mapping[str, Sequence[int]] | None,
    dataset: Mapping[str, Any] | None,
) -> dict[str, list[int]] | None:
    """`input_shapes` completed from an evaluation dataset of arrays: inputs the spec leaves out take the
    dataset's shape at the evaluation batch size, so a dynamic model needs no input_shapes."""
    if dataset is None or dataset["format"] == "text":
        return {k: list(v) for k, v in given.items()} if given is not None else None
    arrays = {str(a["name"]): a["shape"] for a in dataset["arrays"]}
    batch = min(eval_batch_size(model_inputs, given), int(dataset["samples"]))
    shapes = {k: list(v) for k, v in (given or {}).items()}
    for item in model_inputs:
        name = str(item["name"])
        if name not in shapes and name in arrays:
            shapes[name] = [batch, *arrays[name][1:]]
    return shapes or None
