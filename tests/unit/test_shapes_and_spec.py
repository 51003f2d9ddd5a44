"""Spec validation and dynamic-shape resolution: what the API refuses before anything is queued."""

import pytest

from app.errors import ValidationFailed
from app.schemas.shapes import ShapeError, resolve_input_shapes
from app.services.jobs import parse_spec

TEXT_INPUTS = [
    {"name": "input_ids", "dtype": "int64", "shape": ["batch", "sequence"]},
    {"name": "attention_mask", "dtype": "int64", "shape": ["batch", "sequence"]},
]


def test_symbolic_dims_bind_across_inputs() -> None:
    shapes = resolve_input_shapes(TEXT_INPUTS, {"input_ids": [8, 64]})
    assert shapes == {"input_ids": [8, 64], "attention_mask": [8, 64]}


def test_fixed_inputs_need_no_shapes() -> None:
    assert resolve_input_shapes([{"name": "x", "dtype": "float32", "shape": [1, 3, 8, 8]}], None) == {"x": [1, 3, 8, 8]}


@pytest.mark.parametrize(
    ("given", "fragment"),
    [
        (None, "axis 0 (batch), axis 1 (sequence)"),
        ({"input_ids": [8]}, "rank 2"),
        ({"tokens": [8, 64]}, "model's inputs are"),
    ],
)
def test_unresolvable_shapes_name_input_and_axes(given: dict | None, fragment: str) -> None:
    with pytest.raises(ShapeError, match=r"input|names") as info:
        resolve_input_shapes(TEXT_INPUTS, given)
    assert fragment in str(info.value)


def test_fixed_dimension_mismatch_is_refused() -> None:
    with pytest.raises(ShapeError, match="fixed size 3 on axis 1"):
        resolve_input_shapes([{"name": "x", "dtype": "float32", "shape": ["n", 3]}], {"x": [2, 4]})


def test_unknown_rank_needs_an_explicit_shape() -> None:
    with pytest.raises(ShapeError, match="unknown shape"):
        resolve_input_shapes([{"name": "x", "dtype": "float32", "shape": None}], None)


def test_spec_errors_list_every_bad_field() -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_spec(
            {"model_id": "m", "passes": [{"type": "quantize", "method": "fp16", "per_channel": True}], "surprise": 1}
        )
    fields = {e["field"] for e in info.value.extra["errors"]}
    assert "surprise" in fields, "unknown top-level fields are refused, not ignored"
    assert any(f.startswith("passes.0") for f in fields), "fp16 with per_channel is refused"


def test_defaults_favour_fidelity() -> None:
    spec = parse_spec({"model_id": "m", "passes": [{"type": "quantize", "method": "dynamic"}]})
    assert spec.passes[0].per_channel is True  # type: ignore[attr-defined]
    assert spec.device == "cpu" and spec.evaluate.latency.runs == 50


def test_unnamed_dimensions_take_their_own_sizes() -> None:
    inputs = [{"name": "x", "dtype": "float32", "shape": ["?", 3, "?", "?"]}]
    assert resolve_input_shapes(inputs, {"x": [8, 3, 48, 192]}) == {"x": [8, 3, 48, 192]}
    with pytest.raises(ShapeError, match="axis 0"):
        resolve_input_shapes(inputs + [{"name": "y", "dtype": "float32", "shape": ["?", 4]}], {"x": [8, 3, 48, 192]})
