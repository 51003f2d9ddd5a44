"""The dataset rules shared by the API and the worker: which spec fields reference a dataset, when a
dataset fits a model, the shapes it implies, and how text batches are padded."""

from typing import Any

import numpy as np

from app.schemas.datasets import check_fit, dataset_refs, shapes_from_dataset
from workers.datasets import batches

TEXT_MODEL: dict[str, Any] = {
    "format": "onnx",
    "details": {},
    "inputs": [
        {"name": "input_ids", "dtype": "int64", "shape": ["batch", "sequence"]},
        {"name": "attention_mask", "dtype": "int64", "shape": ["batch", "sequence"]},
    ],
}


def _arrays(**shapes: list[int]) -> dict:
    return {
        "id": "ds_x",
        "format": "npz",
        "samples": 4,
        "arrays": [{"name": n, "dtype": "int64", "shape": s} for n, s in shapes.items()],
    }


def test_every_dataset_id_at_any_depth_is_found_with_its_path() -> None:
    spec = {
        "model_id": "mdl_1",
        "passes": [
            {"type": "quantize"},
            {"type": "quantize", "calibration": {"dataset_id": "ds_a"}},
            {"type": "distill", "dataset_id": "ds_b"},
        ],
        "evaluate": {"dataset_id": "ds_a"},
        "other": {"dataset_id": None},
    }
    assert dataset_refs(spec) == [
        ("passes.1.calibration.dataset_id", "ds_a"),
        ("passes.2.dataset_id", "ds_b"),
        ("evaluate.dataset_id", "ds_a"),
    ]


def test_symbolic_dimensions_must_agree_across_arrays() -> None:
    assert check_fit(_arrays(input_ids=[4, 16], attention_mask=[4, 16]), TEXT_MODEL) == []
    problems = check_fit(_arrays(input_ids=[4, 16], attention_mask=[4, 12]), TEXT_MODEL)
    assert len(problems) == 1 and "'sequence'" in problems[0] and "12 vs 16" in problems[0]


def test_unnamed_dimensions_fit_each_on_its_own() -> None:
    for unnamed in (None, "?"):
        model = {
            "format": "onnx",
            "details": {},
            "inputs": [{"name": "x", "dtype": "float32", "shape": [unnamed, 3, unnamed, unnamed]}],
        }
        dataset = {
            "id": "ds_x",
            "format": "npz",
            "samples": 8,
            "arrays": [{"name": "x", "dtype": "float32", "shape": [8, 3, 48, 192]}],
        }
        assert check_fit(dataset, model) == [], f"a (8, 3, 48, 192) dataset fits [{unnamed}, 3, {unnamed}, {unnamed}]"


def test_a_dataset_gives_the_shapes_a_dynamic_model_lacks() -> None:
    dataset = _arrays(input_ids=[4, 16], attention_mask=[4, 16])
    assert shapes_from_dataset(TEXT_MODEL["inputs"], None, dataset) == {
        "input_ids": [4, 16],
        "attention_mask": [4, 16],
    }, "batch = min(32, samples), the rest from the data"
    given = shapes_from_dataset(TEXT_MODEL["inputs"], {"input_ids": [2, 8]}, dataset)
    assert given is not None and given["input_ids"] == [2, 8], "given input_shapes win"


def test_text_batches_are_padded_per_batch() -> None:
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0]])
    data = {"input_ids": mask * 7, "attention_mask": mask}
    cut = batches(data, ["input_ids", "attention_mask"], 2, per_batch_padding=True)
    assert [b["input_ids"].shape for b, _ in cut] == [(2, 4), (2, 2)]
    fixed = batches(data, ["input_ids", "attention_mask"], 2)
    assert [b["input_ids"].shape for b, _ in fixed] == [(2, 4)] * 2, "arrays keep their width"
