"""Shape and layout operators: Shape, Reshape, Flatten, Transpose, Concat, Split, Slice, Gather, (Un)Squeeze,
Expand, Tile, Range, ConstantOfShape, Pad. Axes and sizes come as attributes before an opset and as inputs
from it on; both forms are read."""

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from workers.conversion.onnx_to_torch.module import FormUnsupported, Value
from workers.conversion.onnx_to_torch.node import PYTHON_VECTOR_MAX, Node, as_tensor, axis, ints, is_py

Maker = Callable[[Node], Callable[..., Value]]
INT_MAX = 2**62


def _axes(node: Node, attr_until: int, index: int) -> Callable[[Value], list[int] | None]:
    """The axes of the node: the attribute before opset `attr_until`, the input at `index` from it on."""
    if node.opset < attr_until:
        fixed = node.attrs.get("axes")
        return lambda _: list(fixed) if fixed is not None else None
    return lambda value: ints(value) if value is not None else None


def _shape(node: Node) -> Callable[..., Value]:
    start, end = node.attrs.get("start", 0), node.attrs.get("end")
    return lambda x: list(x.shape)[start:end] if not is_py(x) else [len(ints(x))][start:end]


def _size(node: Node) -> Callable[..., Value]:
    return lambda x: x.numel()


def _reshape(node: Node) -> Callable[..., Value]:
    """A Reshape that flattened all but the batch axis keeps doing so, so it survives channel pruning. One whose
    input has a dynamic axis after the first ([seq, batch, C] -> [-1, C]) merges axes: it is never taken for
    a flatten, though at batch 1 it looks like one."""
    flatten_like: list[bool] = [False] if node.input(0) in node.graph.dynamic_tail else []
    allow_zero = bool(node.attrs.get("allowzero", 0))

    def fn(x: Value, shape: Value) -> Value:
        if is_py(x):
            return ints(x) if len(ints(shape)) == 1 else x
        if flatten_like and flatten_like[0]:
            return x.reshape(x.shape[0], -1)
        target = ints(shape)
        if not allow_zero:
            target = [x.shape[i] if isinstance(d, int) and d == 0 else d for i, d in enumerate(target)]
        out = x.reshape(target)
        if not flatten_like:  # the first run decides, on the conversion's example batch
            flatten_like.append(x.dim() > 2 and out.dim() == 2 and out.shape[0] == x.shape[0])
        return out

    return fn


def _flatten(node: Node) -> Callable[..., Value]:
    ax = int(node.attrs.get("axis", 1))

    def fn(x: torch.Tensor) -> torch.Tensor:
        a = axis(ax, x.dim())
        if a == 0:
            return x.reshape(1, -1)
        return x.flatten(a).flatten(0, a - 1) if a > 1 else x.flatten(1)

    return fn


def _transpose(node: Node) -> Callable[..., Value]:
    perm = node.attrs.get("perm")
    return lambda x: x.permute(list(perm) if perm is not None else list(reversed(range(x.dim()))))


def _concat(node: Node) -> Callable[..., Value]:
    ax = int(node.attrs["axis"])

    def fn(*items: Value) -> Value:
        if any(is_py(i) for i in items) and all(is_py(i) or i.dim() <= 1 for i in items):
            out: list[Any] = []
            for item in items:
                out += ints(item)
            return out
        like = next(i for i in items if isinstance(i, torch.Tensor))
        return torch.cat([as_tensor(i, like) for i in items], dim=ax)

    return fn


def _split(node: Node) -> Callable[..., Value]:
    ax = int(node.attrs.get("axis", 0))
    parts = len(node.outputs)
    fixed = node.attrs.get("split") if node.opset < 13 else None

    def fn(x: torch.Tensor, split: Value = None) -> tuple[torch.Tensor, ...]:
        sizes = list(fixed) if fixed is not None else (ints(split) if split is not None else None)
        if sizes is None:
            length = x.shape[axis(ax, x.dim())]
            chunk = -(-length // parts)  # ONNX: equal parts, the last one smaller if it must be
            return tuple(torch.split(x, chunk, dim=ax))
        return tuple(torch.split(x, sizes, dim=ax))

    return fn


def _slice_python(x: list[Any], starts: list[int], ends: list[int], steps: list[int]) -> list[Any]:
    return x[starts[0] : ends[0] : steps[0]]


def _slice_axis(x: torch.Tensor, dim: int, start: int, end: int, step: int) -> torch.Tensor:
    length = x.shape[dim]
    if step > 0:
        index = [slice(None)] * dim + [slice(start, end, step)]
        return x[tuple(index)]
    # ONNX clamps a negative-step slice to [0, len-1] for the start and [-1, len-1] for the end
    begin = start + length if start < 0 else start
    begin = max(0, min(begin, length - 1))
    stop = end + length if end < 0 and end > -INT_MAX else end
    stop = max(-1, min(stop, length - 1))
    picked = torch.arange(begin, stop, step, device=x.device)
    return x.index_select(dim, picked)


def _slice(node: Node) -> Callable[..., Value]:
    """Slice: starts/ends/axes as attributes before opset 10, then inputs with optional axes and steps."""

    def run(x: Value, starts: Value, ends: Value, axes: Value = None, steps: Value = None) -> Value:
        begin, stop = ints(starts), ints(ends)
        step = ints(steps) if steps is not None else [1] * len(begin)
        if is_py(x):
            return _slice_python(ints(x), begin, stop, step)
        dims = ints(axes) if axes is not None else list(range(len(begin)))
        for d, b, e, s in zip(dims, begin, stop, step, strict=True):
            x = _slice_axis(x, axis(d, x.dim()), b, e, s)
        return x

    if node.opset >= 10:
        return run
    starts, ends, axes = node.attrs["starts"], node.attrs["ends"], node.attrs.get("axes")
    return lambda x: run(x, list(starts), list(ends), list(axes) if axes is not None else None)


def _gather(node: Node) -> Callable[..., Value]:
    ax = int(node.attrs.get("axis", 0))

    def fn(data: Value, indices: Value) -> Value:
        if is_py(data):
            items = ints(data)
            idx = indices.tolist() if isinstance(indices, torch.Tensor) else indices
            return [items[i] for i in idx] if isinstance(idx, list) else items[idx]
        a = axis(ax, data.dim())
        if isinstance(indices, int):
            return data.select(a, indices)
        idx = as_tensor(indices).to(data.device).long()
        idx = torch.where(idx < 0, idx + data.shape[a], idx)
        picked = data.index_select(a, idx.reshape(-1))
        return picked.reshape(list(data.shape[:a]) + list(idx.shape) + list(data.shape[a + 1 :]))

    return fn


def _gather_elements(node: Node) -> Callable[..., Value]:
    ax = int(node.attrs.get("axis", 0))

    def fn(data: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        a = axis(ax, data.dim())
        idx = torch.where(indices < 0, indices + data.shape[a], indices).long()
        return torch.gather(data, a, idx)

    return fn


def _unsqueeze(node: Node) -> Callable[..., Value]:
    axes_of = _axes(node, 13, 1)

    def fn(x: Value, axes: Value = None) -> Value:
        dims = axes_of(axes) or []
        if isinstance(x, list):
            x = torch.tensor(x)
        elif is_py(x):
            return [x]
        for d in sorted(axis(a, x.dim() + len(dims)) for a in dims):
            x = x.unsqueeze(d)
        return x

    return fn


def _squeeze(node: Node) -> Callable[..., Value]:
    axes_of = _axes(node, 13, 1)

    def fn(x: Value, axes: Value = None) -> Value:
        dims = axes_of(axes)
        if is_py(x):
            return ints(x)[0] if isinstance(x, list) and len(x) == 1 else x
        if dims is None:
            return x.squeeze()
        return x.squeeze(tuple(axis(a, x.dim()) for a in dims))

    return fn


def _expand(node: Node) -> Callable[..., Value]:
    def fn(x: Value, shape: Value) -> torch.Tensor:
        tensor = as_tensor(x)
        return tensor.expand(torch.broadcast_shapes(tuple(tensor.shape), tuple(ints(shape))))

    return fn


def _tile(node: Node) -> Callable[..., Value]:
    return lambda x, repeats: x.repeat(ints(repeats))


def _range(node: Node) -> Callable[..., Value]:
    def fn(start: Value, limit: Value, delta: Value) -> torch.Tensor:
        scalars = [v.item() if isinstance(v, torch.Tensor) else v for v in (start, limit, delta)]
        like = next((v for v in (start, limit, delta) if isinstance(v, torch.Tensor)), None)
        dtype = like.dtype if like is not None else None
        return torch.arange(*scalars, dtype=dtype)

    return fn


def _constant_of_shape(node: Node) -> Callable[..., Value]:
    value = node.attrs.get("value")
    array = np.zeros(1, np.float32) if value is None else numpy_helper.to_array(value).reshape(-1)
    fill = array[0].item()
    dtype = torch.from_numpy(array.copy()).dtype

    def fn(shape: Value) -> Value:
        dims = ints(shape)
        small = len(dims) == 1 and isinstance(dims[0], int) and dims[0] <= PYTHON_VECTOR_MAX
        if small and not dtype.is_floating_point and dtype != torch.bool:
            return [fill] * dims[0]  # a shape-sized int vector: stays python like the shapes it meets
        return torch.full(dims, fill, dtype=dtype)

    return fn


PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}


def _pad(node: Node) -> Callable[..., Value]:
    """Pad: pads (and value) as attributes before opset 11, as inputs from it on (axes from opset 18)."""
    mode = node.attrs.get("mode", "constant")
    if mode not in PAD_MODES:
        raise FormUnsupported(f"mode {mode}")
    fixed_pads = node.attrs.get("pads") if node.opset < 11 else None
    fixed_value = float(node.attrs.get("value", 0.0))

    def fn(x: torch.Tensor, pads: Value = None, value: Value = None, axes: Value = None) -> torch.Tensor:
        amounts = list(fixed_pads) if fixed_pads is not None else ints(pads)
        dims = [axis(a, x.dim()) for a in ints(axes)] if axes is not None else list(range(x.dim()))
        begin, end = (
            dict(zip(dims, amounts[: len(dims)], strict=True)),
            dict(zip(dims, amounts[len(dims) :], strict=True)),
        )
        explicit: list[Any] = []
        for d in reversed(range(x.dim())):
            explicit += [begin.get(d, 0), end.get(d, 0)]
        while len(explicit) > 2 and explicit[-1] == 0 and explicit[-2] == 0:
            explicit = explicit[:-2]
        if mode != "constant":
            return F.pad(x, explicit, mode=PAD_MODES[mode])
        fill = fixed_value if value is None else (value.item() if isinstance(value, torch.Tensor) else value)
        return F.pad(x, explicit, value=fill)

    return fn


def _depth_to_space(node: Node) -> Callable[..., Value]:
    block, mode = int(node.attrs["blocksize"]), node.attrs.get("mode", "DCR")
    if mode == "CRD":
        return lambda x: F.pixel_shuffle(x, block)

    def dcr(x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        y = x.reshape(n, block, block, c // (block * block), h, w).permute(0, 3, 4, 1, 5, 2)
        return y.reshape(n, c // (block * block), h * block, w * block)

    return dcr


def _space_to_depth(node: Node) -> Callable[..., Value]:
    block = int(node.attrs["blocksize"])

    def fn(x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        y = x.reshape(n, c, h // block, block, w // block, block).permute(0, 3, 5, 1, 2, 4)
        return y.reshape(n, c * block * block, h // block, w // block)

    return fn


OPS: dict[str, Maker] = {
    "Shape": _shape,
    "Size": _size,
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Transpose": _transpose,
    "Concat": _concat,
    "Split": _split,
    "Slice": _slice,
    "Gather": _gather,
    "GatherElements": _gather_elements,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Expand": _expand,
    "Tile": _tile,
    "Range": _range,
    "ConstantOfShape": _constant_of_shape,
    "Pad": _pad,
    "DepthToSpace": _depth_to_space,
    "SpaceToDepth": _space_to_depth,
}
