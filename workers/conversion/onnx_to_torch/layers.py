"""Weight-carrying operators become real torch layers holding the weights as parameters, so pruning,
factorization and training see them: Conv, ConvTranspose, Gemm and MatMul (+ its bias Add) with constant
weights, BatchNormalization, LayerNormalization. Non-constant weights fall back to the functional form."""

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workers.conversion.onnx_to_torch.module import FormUnsupported
from workers.conversion.onnx_to_torch.node import Built, Node, axis
from workers.conversion.onnx_to_torch.reduce import pads, same_pads

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
CONV_TRANSPOSE = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
BATCH_NORM = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}


def _call(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return layer(x)  # type: ignore[no-any-return]


def _copy(param: torch.Tensor | None, value: torch.Tensor) -> None:
    assert param is not None
    with torch.no_grad():
        param.copy_(value)


def _conv(node: Node) -> Built:
    weight = node.weight(1)
    spatial = weight.dim() - 2
    strides = tuple(node.attrs.get("strides", [1] * spatial))
    dilations = tuple(node.attrs.get("dilations", [1] * spatial))
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    padding, explicit = pads(node.attrs, spatial) if auto_pad in ("NOTSET", "VALID") else ((0,) * spatial, None)
    group = int(node.attrs.get("group", 1))
    bias = node.static(2)
    layer = CONV[spatial](
        weight.shape[1] * group,
        weight.shape[0],
        tuple(weight.shape[2:]),  # type: ignore[arg-type]
        stride=strides,  # type: ignore[arg-type]
        padding=padding,  # type: ignore[arg-type]
        dilation=dilations,  # type: ignore[arg-type]
        groups=group,
        bias=bias is not None,
    )
    _copy(layer.weight, weight)
    if bias is not None:
        _copy(layer.bias, node.weight(2))
    kernel = tuple(weight.shape[2:])

    def fn(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            x = F.pad(x, same_pads(auto_pad, x, kernel, strides, dilations))
        elif explicit is not None:
            x = F.pad(x, explicit)
        return module(x)  # type: ignore[no-any-return]

    if node.input(2) and bias is None:
        raise FormUnsupported("bias not constant")
    return Built(fn, [node.input(0)], layer=node.add_layer(layer, node.input(1)))


def _conv_transpose(node: Node) -> Built:
    """ConvTranspose; asymmetric pads are cropped from the unpadded output."""
    weight = node.weight(1)
    spatial = weight.dim() - 2
    if "output_shape" in node.attrs or node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise FormUnsupported("output_shape / auto_pad")
    group = int(node.attrs.get("group", 1))
    all_pads = list(node.attrs.get("pads", [0] * 2 * spatial))
    begin, end = all_pads[:spatial], all_pads[spatial:]
    symmetric = begin == end
    bias = node.static(2)
    if node.input(2) and bias is None:
        raise FormUnsupported("bias not constant")
    layer = CONV_TRANSPOSE[spatial](
        weight.shape[0],
        weight.shape[1] * group,
        tuple(weight.shape[2:]),  # type: ignore[arg-type]
        stride=tuple(node.attrs.get("strides", [1] * spatial)),  # type: ignore[arg-type]
        padding=tuple(begin) if symmetric else 0,  # type: ignore[arg-type]
        output_padding=tuple(node.attrs.get("output_padding", [0] * spatial)),  # type: ignore[arg-type]
        dilation=tuple(node.attrs.get("dilations", [1] * spatial)),  # type: ignore[arg-type]
        groups=group,
        bias=bias is not None,
    )
    _copy(layer.weight, weight)
    if bias is not None:
        _copy(layer.bias, node.weight(2))

    def cropped(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        out = module(x)
        index: list[Any] = [slice(None), slice(None)]
        index += [slice(b, out.shape[2 + i] - e) for i, (b, e) in enumerate(zip(begin, end, strict=True))]
        return out[tuple(index)]  # type: ignore[no-any-return]

    return Built(_call if symmetric else cropped, [node.input(0)], layer=node.add_layer(layer, node.input(1)))


def _linear(node: Node, weight_t: np.ndarray, bias: np.ndarray | None) -> str:
    """`weight_t` is [in, out] (ONNX's MatMul/Gemm layout); nn.Linear holds [out, in]."""
    layer = nn.Linear(weight_t.shape[0], weight_t.shape[1], bias=bias is not None)
    _copy(layer.weight, torch.from_numpy(np.ascontiguousarray(weight_t.T, dtype=np.float32)))
    if bias is not None:
        _copy(layer.bias, torch.from_numpy(np.array(bias, dtype=np.float32)))
    return node.add_layer(layer, node.input(1))


def _gemm(node: Node) -> Built:
    alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
    trans_a, trans_b = bool(node.attrs.get("transA", 0)), bool(node.attrs.get("transB", 0))
    b, c = node.static(1), node.static(2)
    if not trans_a and b is not None and b.ndim == 2 and (not node.input(2) or (c is not None and c.ndim <= 1)):
        weight_t = (b.T if trans_b else b) * alpha
        bias = np.broadcast_to(c * beta, (weight_t.shape[1],)) if c is not None else None
        return Built(_call, [node.input(0)], layer=_linear(node, weight_t, bias))

    def fn(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        out = alpha * ((a.T if trans_a else a) @ (b.T if trans_b else b))
        return out + beta * c if c is not None else out

    return Built(fn)


def _bias_add(node: Node, width: int) -> tuple[np.ndarray, list[str]] | None:
    """The Add right after a MatMul that adds a constant [width] bias: its bias and outputs, to fold it in."""
    follower = node.sole_consumer(node.outputs[0])
    if follower is None or follower.op_type != "Add" or node.outputs[0] in node.graph.module.output_names:
        return None
    other = next((n for n in follower.input if n != node.outputs[0]), None)
    bias = node.graph.static.get(other) if other else None
    if bias is None or bias.shape != (width,):
        return None
    node.graph.skipped.add(id(follower))
    return bias, list(follower.output)


def _matmul(node: Node) -> Built:
    weight = node.static(1)
    if weight is None or weight.ndim != 2 or node.static(0) is not None:
        return Built(
            lambda a, b: torch.matmul(*[t if isinstance(t, torch.Tensor) else torch.tensor(t) for t in (a, b)])
        )
    fused = _bias_add(node, weight.shape[1])
    if fused is None:
        return Built(_call, [node.input(0)], layer=_linear(node, weight, None))
    return Built(_call, [node.input(0)], outputs=fused[1], layer=_linear(node, weight, fused[0]))


class _AnyRankBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over any input rank >= 2 (when shape inference left the rank unknown)."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        return None


def _batchnorm(node: Node) -> Built:
    if len([o for o in node.outputs if o]) > 1:
        raise FormUnsupported("training-mode outputs")
    scale = node.weight(1, "scale")
    cls = BATCH_NORM.get(node.rank(0) or 0, _AnyRankBatchNorm)
    layer = cls(
        scale.shape[0], eps=float(node.attrs.get("epsilon", 1e-5)), momentum=1 - float(node.attrs.get("momentum", 0.9))
    )
    _copy(layer.weight, scale)
    _copy(layer.bias, node.weight(2, "bias"))
    _copy(layer.running_mean, node.weight(3, "mean"))
    _copy(layer.running_var, node.weight(4, "variance"))
    return Built(_call, [node.input(0)], layer=node.add_layer(layer, node.input(1)))


def _layer_norm(node: Node) -> Built:
    if len([o for o in node.outputs if o]) > 1:
        raise FormUnsupported("Mean / InvStdDev outputs")
    eps, ax = float(node.attrs.get("epsilon", 1e-5)), int(node.attrs.get("axis", -1))
    scale, bias = node.static(1), node.static(2)
    if scale is not None and (bias is not None or not node.input(2)):
        layer = nn.LayerNorm(list(scale.shape), eps=eps, bias=bias is not None)
        _copy(layer.weight, node.weight(1))
        if bias is not None:
            _copy(layer.bias, node.weight(2))
        return Built(_call, [node.input(0)], layer=node.add_layer(layer, node.input(1)))

    def fn(x: torch.Tensor, weight: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        shape = list(x.shape[axis(ax, x.dim()) :])
        return F.layer_norm(x, shape, weight.expand(shape), b.expand(shape) if b is not None else None, eps)

    return Built(fn)


def _instance_norm(node: Node) -> Built:
    eps = float(node.attrs.get("epsilon", 1e-5))
    return Built(lambda x, scale, b: F.instance_norm(x, weight=scale, bias=b, eps=eps))


OPS: dict[str, Callable[[Node], Built]] = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "BatchNormalization": _batchnorm,
    "LayerNormalization": _layer_norm,
    "InstanceNormalization": _instance_norm,
}
