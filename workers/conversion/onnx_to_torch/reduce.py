"""Reductions and pooling: Reduce*, ArgMax/ArgMin, TopK, Max/AveragePool, Global pools.

Reduce axes are an attribute before opset 18 (ReduceSum: before 13) and an optional input from then on."""

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from workers.conversion.onnx_to_torch.module import FormUnsupported, Value
from workers.conversion.onnx_to_torch.node import Node, axis, ints

Maker = Callable[[Node], Callable[..., Value]]

REDUCE: dict[str, Callable[[torch.Tensor, tuple[int, ...], bool], torch.Tensor]] = {
    "ReduceMean": lambda x, d, k: x.mean(dim=d, keepdim=k),
    "ReduceSum": lambda x, d, k: x.sum(dim=d, keepdim=k),
    "ReduceMax": lambda x, d, k: x.amax(dim=d, keepdim=k),
    "ReduceMin": lambda x, d, k: x.amin(dim=d, keepdim=k),
    "ReduceProd": lambda x, d, k: _prod(x, d, k),
    "ReduceL1": lambda x, d, k: x.abs().sum(dim=d, keepdim=k),
    "ReduceL2": lambda x, d, k: (x * x).sum(dim=d, keepdim=k).sqrt(),
    "ReduceSumSquare": lambda x, d, k: (x * x).sum(dim=d, keepdim=k),
    "ReduceLogSumExp": lambda x, d, k: torch.logsumexp(x, dim=d, keepdim=k),
}


PY_REDUCE: dict[str, Callable[[list[Any]], Any]] = {
    "ReduceProd": math.prod,
    "ReduceSum": sum,
    "ReduceMax": max,
    "ReduceMin": min,
}
"""over a shape (a python list): the element count of some axes, as exporters compute it for a Reshape"""


def _prod(x: torch.Tensor, dims: tuple[int, ...], keep: bool) -> torch.Tensor:
    for d in sorted(dims, reverse=True):
        x = x.prod(dim=d, keepdim=keep)
    return x


def _reduce(node: Node) -> Callable[..., Value]:
    reduce = REDUCE[node.op]
    keep = bool(node.attrs.get("keepdims", 1))
    noop = bool(node.attrs.get("noop_with_empty_axes", 0))
    axes_as_input = node.opset >= (13 if node.op == "ReduceSum" else 18)
    fixed = node.attrs.get("axes")

    def fn(x: Value, axes: Value = None) -> Value:
        if isinstance(x, list) and node.op in PY_REDUCE:
            value = PY_REDUCE[node.op](x)
            return [value] if keep else value
        dims = (ints(axes) if axes is not None else []) if axes_as_input else list(fixed or [])
        if not dims:
            if noop:
                return x
            dims = list(range(x.dim()))
        return reduce(x, tuple(axis(d, x.dim()) for d in dims), keep)

    return fn


def _arg(node: Node) -> Callable[..., Value]:
    ax, keep = int(node.attrs.get("axis", 0)), bool(node.attrs.get("keepdims", 1))
    last = bool(node.attrs.get("select_last_index", 0))
    pick = torch.argmax if node.op == "ArgMax" else torch.argmin

    def fn(x: torch.Tensor) -> torch.Tensor:
        a = axis(ax, x.dim())
        if not last:
            return pick(x, dim=a, keepdim=keep)
        flipped = pick(x.flip(a), dim=a, keepdim=keep)
        return x.shape[a] - 1 - flipped

    return fn


def _topk(node: Node) -> Callable[..., Value]:
    ax = int(node.attrs.get("axis", -1))
    largest, ordered = bool(node.attrs.get("largest", 1)), bool(node.attrs.get("sorted", 1))
    fixed_k = node.attrs.get("k")  # opset < 10

    def fn(x: torch.Tensor, k: Value = None) -> tuple[torch.Tensor, torch.Tensor]:
        count = fixed_k if fixed_k is not None else ints(k)[0]
        values, indices = torch.topk(x, count, dim=ax, largest=largest, sorted=ordered)
        return values, indices

    return fn


def pads(attrs: dict[str, Any], spatial: int) -> tuple[tuple[int, ...], list[int] | None]:
    """Symmetric ONNX pads become the layer's padding; asymmetric ones an explicit F.pad before it."""
    values = list(attrs.get("pads", [0] * 2 * spatial))
    begin, end = values[:spatial], values[spatial:]
    if begin == end:
        return tuple(begin), None
    explicit: list[int] = []
    for b, e in zip(reversed(begin), reversed(end), strict=True):
        explicit += [b, e]
    return (0,) * spatial, explicit


def same_pads(
    auto_pad: str, x: torch.Tensor, kernel: tuple[int, ...], strides: tuple[int, ...], dilations: tuple[int, ...]
) -> list[Any]:
    """F.pad amounts for auto_pad SAME_UPPER / SAME_LOWER (output = ceil(input / stride))."""
    explicit: list[Any] = []
    spatial = len(kernel)
    for i in reversed(range(spatial)):
        size = x.shape[2 + i]
        out = -(-size // strides[i])
        total = max((out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - size, 0)
        small, large = total // 2, total - total // 2
        explicit += [small, large] if auto_pad == "SAME_UPPER" else [large, small]
    return explicit


POOLS = {
    ("max", 1): F.max_pool1d,
    ("max", 2): F.max_pool2d,
    ("max", 3): F.max_pool3d,
    ("avg", 1): F.avg_pool1d,
    ("avg", 2): F.avg_pool2d,
    ("avg", 3): F.avg_pool3d,
}


def _pool(node: Node) -> Callable[..., Value]:
    kind = "max" if node.op == "MaxPool" else "avg"
    kernel = tuple(node.attrs["kernel_shape"])
    spatial = len(kernel)
    if node.op == "MaxPool" and node.used(1):
        raise FormUnsupported("Indices output")
    strides = tuple(node.attrs.get("strides", [1] * spatial))
    dilations = tuple(node.attrs.get("dilations", [1] * spatial))
    if kind == "avg" and any(d != 1 for d in dilations):
        raise FormUnsupported("dilations")
    padding, explicit = pads(node.attrs, spatial)
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    ceil = bool(node.attrs.get("ceil_mode", 0))
    include_pad = bool(node.attrs.get("count_include_pad", 0))
    pool: Any = POOLS[(kind, spatial)]
    fill = -math.inf if kind == "max" else 0.0

    def fn(x: torch.Tensor) -> torch.Tensor:
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            x = F.pad(x, same_pads(auto_pad, x, kernel, strides, dilations), value=fill)
        elif explicit is not None:
            x = F.pad(x, explicit, value=fill)
        if kind == "max":
            return pool(x, kernel, strides, padding, dilations, ceil_mode=ceil)  # type: ignore[no-any-return]
        return pool(x, kernel, strides, padding, ceil_mode=ceil, count_include_pad=include_pad)  # type: ignore[no-any-return]

    return fn


def _global_pool(node: Node) -> Callable[..., Value]:
    if node.op == "GlobalMaxPool":
        return lambda x: x.amax(dim=tuple(range(2, x.dim())), keepdim=True)
    return lambda x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True)


OPS: dict[str, Maker] = {
    **dict.fromkeys(REDUCE, _reduce),
    "ArgMax": _arg,
    "ArgMin": _arg,
    "TopK": _topk,
    "MaxPool": _pool,
    "AveragePool": _pool,
    "GlobalMaxPool": _global_pool,
    "GlobalAveragePool": _global_pool,
}
