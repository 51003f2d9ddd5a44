"""Fix a model's dynamic dimensions from a job's `input_shapes`: checked at submit by the API, used by the
worker to build evaluation inputs. Dimensions sharing a symbolic name (e.g. `batch`) take one value, so
giving `input_ids: [8, 64]` also fixes `attention_mask: [batch, sequence]`. An unnamed dimension (no name, or the
placeholders exporters write for one, such as Paddle2ONNX's `?`) is its own dimension, independent of every
other."""

from collections.abc import Mapping, Sequence
from typing import Any

UNNAMED = frozenset({"", "?", "-1", "None"})
"""dim_param values that exporters write for a dimension they did not name"""


def dimension_name(dim: Any) -> str | None:
    """The symbolic name that ties `dim` to other dimensions, or None for a fixed or unnamed one."""
    return dim if isinstance(dim, str) and dim not in UNNAMED else None


class ShapeError(ValueError):
    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def resolve_input_shapes(
    inputs: Sequence[Mapping[str, Any]], given: Mapping[str, Sequence[int]] | None
) -> dict[str, list[int]]:
    given = dict(given or {})
    known = {str(i["name"]) for i in inputs}
    for name in given:
        if name not in known:
            raise ShapeError(
                f"input_shapes names {name!r}, but the model's inputs are {sorted(known)}", f"input_shapes.{name}"
            )
    bound: dict[str, int] = {}
    for item in inputs:
        name, shape = str(item["name"]), item.get("shape")
        if name not in given:
            continue
        dims = list(given[name])
        if shape is not None and len(shape) != len(dims):
            raise ShapeError(
                f"input {name!r} has rank {len(shape)} (shape {shape}), but input_shapes gives "
                f"{len(dims)} dimensions {dims}",
                f"input_shapes.{name}",
            )
        for axis, (model_dim, value) in enumerate(zip(shape or [None] * len(dims), dims, strict=True)):
            if isinstance(model_dim, int) and model_dim > 0 and model_dim != value:
                raise ShapeError(
                    f"input {name!r} has fixed size {model_dim} on axis {axis}, but input_shapes gives {value}",
                    f"input_shapes.{name}",
                )
            symbol = dimension_name(model_dim)
            if symbol is not None:
                bound.setdefault(symbol, value)
    resolved: dict[str, list[int]] = {}
    for item in inputs:
        name, shape = str(item["name"]), item.get("shape")
        if name in given:
            resolved[name] = list(given[name])
            continue
        if shape is None:
            raise ShapeError(
                f'input {name!r} has unknown shape: give it in input_shapes, e.g. {{"{name}": [1, 3, 224, 224]}}',
                f"input_shapes.{name}",
            )
        dims, unknown = [], []
        for axis, model_dim in enumerate(shape):
            if isinstance(model_dim, int) and model_dim > 0:
                dims.append(model_dim)
            elif dimension_name(model_dim) in bound:
                dims.append(bound[model_dim])
            else:
                unknown.append(f"axis {axis} ({model_dim or 'unnamed'})")
                dims.append(0)
        if unknown:
            example = [d if d else 1 for d in dims]
            raise ShapeError(
                f"input {name!r} has dynamic dimensions {', '.join(unknown)} in shape {shape}; "
                f'fix them with input_shapes, e.g. {{"{name}": {example}}}',
                f"input_shapes.{name}",
            )
        resolved[name] = dims
    return resolved
