"""Elementwise operators: activations, arithmetic, comparisons, logic, Cast, Clip, Where, Softmax, and the few
other tensor-to-tensor ones (LRN, Einsum, CumSum, Trilu).

Each works on tensors and, where the graph computes shapes, on python values (see `Value`)."""

import math
import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from workers.conversion.onnx_to_torch.module import FormUnsupported, Value
from workers.conversion.onnx_to_torch.node import Node, axis, is_py, pyop, tensors

Maker = Callable[[Node], Callable[..., Value]]


def _int_div(a: Any, b: Any) -> Any:
    if isinstance(a, float) or isinstance(b, float) or isinstance(a, torch.SymFloat):
        return a / b
    return a // b if (a >= 0) == (b > 0) else -(-a // b)  # ONNX integer division truncates


def _tensor_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.dtype.is_floating_point:
        return a / b
    return torch.div(a, b, rounding_mode="trunc")


def _mixed(torch_fn: Callable[..., Value], py_fn: Callable[..., Value] | None = None) -> Callable[..., Value]:
    """Python values stay python when all inputs are (shape arithmetic); otherwise everything is a tensor."""

    def fn(*args: Value) -> Value:
        if py_fn is not None and all(is_py(a) for a in args):
            return pyop(py_fn, *args)
        return torch_fn(*tensors(*args))

    return fn


UNARY: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "Relu": F.relu,
    "Sigmoid": torch.sigmoid,
    "Tanh": torch.tanh,
    "Erf": torch.erf,
    "Sqrt": torch.sqrt,
    "Exp": torch.exp,
    "Log": torch.log,
    "Reciprocal": torch.reciprocal,
    "Round": torch.round,
    "Sign": torch.sign,
    "Sin": torch.sin,
    "Cos": torch.cos,
    "Softplus": F.softplus,
    "Softsign": F.softsign,
    "HardSwish": F.hardswish,
    "Mish": F.mish,
    "IsNaN": torch.isnan,
}
PY_UNARY: dict[str, tuple[Callable[..., Value], Callable[..., Value]]] = {
    "Neg": (torch.neg, operator.neg),
    "Abs": (torch.abs, abs),
    "Not": (torch.logical_not, operator.not_),
    "Floor": (torch.floor, math.floor),
    "Ceil": (torch.ceil, math.ceil),
}
BINARY: dict[str, tuple[Callable[..., Value], Callable[..., Value]]] = {
    "Add": (torch.add, operator.add),
    "Sub": (torch.sub, operator.sub),
    "Mul": (torch.mul, operator.mul),
    "Div": (_tensor_div, _int_div),
    "Pow": (torch.pow, operator.pow),
    "Equal": (torch.eq, operator.eq),
    "Less": (torch.lt, operator.lt),
    "LessOrEqual": (torch.le, operator.le),
    "Greater": (torch.gt, operator.gt),
    "GreaterOrEqual": (torch.ge, operator.ge),
    "And": (torch.logical_and, lambda a, b: bool(a) and bool(b)),
    "Or": (torch.logical_or, lambda a, b: bool(a) or bool(b)),
    "Xor": (torch.logical_xor, operator.xor),
}
VARIADIC: dict[str, tuple[Callable[..., Value], Callable[..., Value]]] = {
    "Sum": (torch.add, operator.add),
    "Max": (torch.maximum, max),
    "Min": (torch.minimum, min),
}

DTYPES = {
    1: torch.float32,
    2: torch.uint8,
    3: torch.int8,
    5: torch.int16,
    6: torch.int32,
    7: torch.int64,
    9: torch.bool,
    10: torch.float16,
    11: torch.float64,
    16: torch.bfloat16,
}


def _unary(node: Node) -> Callable[..., Value]:
    fn = UNARY[node.op]
    return lambda x: fn(torch.tensor(x, dtype=torch.float32) if is_py(x) else x)  # a python value: a shape


def _py_unary(node: Node) -> Callable[..., Value]:
    return _mixed(*PY_UNARY[node.op])


def _binary(node: Node) -> Callable[..., Value]:
    return _mixed(*BINARY[node.op])


def _variadic(node: Node) -> Callable[..., Value]:
    torch_fn, py_fn = VARIADIC[node.op]

    def fold(*items: Value) -> Value:
        out = items[0]
        for item in items[1:]:
            out = torch_fn(out, item)
        return out

    def fold_py(*items: Value) -> Value:
        out = items[0]
        for item in items[1:]:
            out = py_fn(out, item)
        return out

    return _mixed(fold, fold_py)


def _mean(node: Node) -> Callable[..., Value]:
    return lambda *items: sum(tensors(*items)) / len(items)


def _mod(node: Node) -> Callable[..., Value]:
    if node.attrs.get("fmod", 0):
        return _mixed(torch.fmod, math.fmod)
    return _mixed(torch.remainder, operator.mod)


def _where(node: Node) -> Callable[..., Value]:
    return _mixed(torch.where, lambda c, a, b: a if c else b)


def _cast_py(dtype: torch.dtype) -> Callable[[Any], Any]:
    if dtype == torch.bool:
        return bool
    if dtype.is_floating_point:
        return lambda v: v * 1.0
    return lambda v: v if isinstance(v, int | torch.SymInt) else int(v)


def _cast(node: Node) -> Callable[..., Value]:
    to = int(node.attrs["to"])
    if to not in DTYPES:
        raise FormUnsupported(f"cast to ONNX type {to}")
    dtype = DTYPES[to]

    def fn(x: Value) -> Value:
        return pyop(_cast_py(dtype), x) if is_py(x) else x.to(dtype)

    return fn


def _cast_like(node: Node) -> Callable[..., Value]:
    return lambda x, like: tensors(x, like)[0].to(like.dtype)


def _clip(node: Node) -> Callable[..., Value]:
    low_attr, high_attr = node.attrs.get("min"), node.attrs.get("max")  # opset < 11: attributes

    def fn(x: torch.Tensor, low: Value = None, high: Value = None) -> torch.Tensor:
        lo = low if low is not None else low_attr
        hi = high if high is not None else high_attr
        return torch.clamp(x, lo, hi)

    return fn


def _hard_sigmoid(node: Node) -> Callable[..., Value]:
    alpha, beta = float(node.attrs.get("alpha", 0.2)), float(node.attrs.get("beta", 0.5))
    return lambda x: torch.clamp(alpha * x + beta, 0.0, 1.0)


def _leaky_relu(node: Node) -> Callable[..., Value]:
    alpha = float(node.attrs.get("alpha", 0.01))
    return lambda x: F.leaky_relu(x, alpha)


def _elu(node: Node) -> Callable[..., Value]:
    alpha = float(node.attrs.get("alpha", 1.0))
    return lambda x: F.elu(x, alpha)


def _celu(node: Node) -> Callable[..., Value]:
    alpha = float(node.attrs.get("alpha", 1.0))
    return lambda x: F.celu(x, alpha)


def _selu(node: Node) -> Callable[..., Value]:
    alpha = float(node.attrs.get("alpha", 1.67326319217681884765625))
    gamma = float(node.attrs.get("gamma", 1.05070102214813232421875))
    return lambda x: gamma * torch.where(x > 0, x, alpha * (torch.exp(x) - 1))


def _thresholded_relu(node: Node) -> Callable[..., Value]:
    alpha = float(node.attrs.get("alpha", 1.0))
    return lambda x: torch.where(x > alpha, x, torch.zeros_like(x))


def _prelu(node: Node) -> Callable[..., Value]:
    return lambda x, slope: torch.where(x >= 0, x, x * slope)


def _gelu(node: Node) -> Callable[..., Value]:
    approximate = "tanh" if node.attrs.get("approximate") == "tanh" else "none"
    return lambda x: F.gelu(x, approximate=approximate)


def _is_inf(node: Node) -> Callable[..., Value]:
    positive, negative = node.attrs.get("detect_positive", 1), node.attrs.get("detect_negative", 1)
    return lambda x: (torch.isposinf(x) & bool(positive)) | (torch.isneginf(x) & bool(negative))


def _softmax(node: Node) -> Callable[..., Value]:
    """From opset 13 over one axis (default -1); before, over the input flattened from `axis` (default 1)."""
    log = node.op == "LogSoftmax"
    if node.opset >= 13:
        dim = int(node.attrs.get("axis", -1))
        return lambda x: F.log_softmax(x, dim=dim) if log else F.softmax(x, dim=dim)
    coerce = int(node.attrs.get("axis", 1))

    def fn(x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(axis(coerce, x.dim())) if axis(coerce, x.dim()) < x.dim() - 1 else x
        out = F.log_softmax(flat, dim=-1) if log else F.softmax(flat, dim=-1)
        return out.reshape(x.shape)

    return fn


def _lrn(node: Node) -> Callable[..., Value]:
    """Caffe-era local response normalization: ONNX's and torch's formulas are the same."""
    size = int(node.attrs["size"])
    alpha, beta, bias = (float(node.attrs.get(k, d)) for k, d in (("alpha", 1e-4), ("beta", 0.75), ("bias", 1.0)))
    return lambda x: F.local_response_norm(x, size, alpha, beta, bias)


def _einsum(node: Node) -> Callable[..., Value]:
    equation = node.attrs["equation"].replace(" ", "")
    return lambda *operands: torch.einsum(equation, *operands)


def _cumsum(node: Node) -> Callable[..., Value]:
    exclusive, reverse = bool(node.attrs.get("exclusive", 0)), bool(node.attrs.get("reverse", 0))

    def fn(x: torch.Tensor, ax: Value) -> torch.Tensor:
        dim = axis(int(ax) if not isinstance(ax, list) else ax[0], x.dim())
        y = x.flip(dim) if reverse else x
        out = y.cumsum(dim)
        if exclusive:
            out = out - y
        return out.flip(dim) if reverse else out

    return fn


def _trilu(node: Node) -> Callable[..., Value]:
    upper = bool(node.attrs.get("upper", 1))

    def fn(x: torch.Tensor, k: Value = None) -> torch.Tensor:
        diagonal = 0 if k is None else (k if isinstance(k, int) else int(k))
        return torch.triu(x, diagonal) if upper else torch.tril(x, diagonal)

    return fn


def _identity(node: Node) -> Callable[..., Value]:
    if node.op == "Dropout" and node.used(1):
        raise FormUnsupported("mask output")
    return lambda x, *_: x


OPS: dict[str, Maker] = {
    **dict.fromkeys(UNARY, _unary),
    **dict.fromkeys(PY_UNARY, _py_unary),
    **dict.fromkeys(BINARY, _binary),
    **dict.fromkeys(VARIADIC, _variadic),
    "Mean": _mean,
    "Mod": _mod,
    "Where": _where,
    "Cast": _cast,
    "CastLike": _cast_like,
    "Clip": _clip,
    "HardSigmoid": _hard_sigmoid,
    "LeakyRelu": _leaky_relu,
    "Elu": _elu,
    "Celu": _celu,
    "Selu": _selu,
    "ThresholdedRelu": _thresholded_relu,
    "PRelu": _prelu,
    "Gelu": _gelu,
    "IsInf": _is_inf,
    "Softmax": _softmax,
    "LogSoftmax": _softmax,
    "LRN": _lrn,
    "Einsum": _einsum,
    "CumSum": _cumsum,
    "Trilu": _trilu,
    "Identity": _identity,
    "Dropout": _identity,
}
