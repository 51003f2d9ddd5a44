"""ONNX -> torch without onnx2torch (it imports torchvision, which does not load beside our torch).

The graph becomes an `OnnxModule`: Conv, Gemm, MatMul(+Add) and BatchNormalization with initializer
weights become real nn.Conv1d/2d, nn.Linear and nn.BatchNorm modules holding those weights as parameters,
so pruning, factorization and training see them; every other supported node is a small torch function.
The module runs the nodes in graph order, takes the inputs positionally and returns the graph's outputs.
"""

import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

Value = Any  # a tensor, or a shape (a list of ints) where the graph computes on Shape's output


class ConversionUnsupported(Exception):
    """The graph holds operators (or attributes) the converter does not cover; names them."""

    def __init__(self, ops: list[str]) -> None:
        super().__init__(", ".join(ops))
        self.ops = ops


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _ints(value: Value) -> list[int]:
    if isinstance(value, torch.Tensor):
        return [int(v) for v in value.reshape(-1).tolist()]
    if isinstance(value, list):
        return value
    return [value]


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _pads(pads: list[int], spatial: int) -> tuple[tuple[int, ...], list[int] | None]:
    """Symmetric ONNX pads become the layer's padding; asymmetric ones an explicit F.pad before it."""
    begin, end = pads[:spatial], pads[spatial:]
    if begin == end:
        return tuple(begin), None
    explicit: list[int] = []
    for b, e in zip(reversed(begin), reversed(end), strict=True):
        explicit += [b, e]
    return (0,) * spatial, explicit


class _Step:
    """One node: its callable (a registered module or a function) and where its values come from/go."""

    def __init__(
        self, fn: Callable[..., Value], inputs: list[str], outputs: list[str], layer: str | None = None
    ) -> None:
        self.fn = fn
        self.inputs = inputs
        self.outputs = outputs
        self.layer = layer
        """looked up by name on each call, so replacing or copying the module's layers is seen"""


class OnnxModule(nn.Module):
    """A converted ONNX graph; `layers` holds the weight-carrying modules by sanitized initializer name."""

    def __init__(self, input_names: list[str], output_names: list[str]) -> None:
        super().__init__()
        self.input_names = input_names
        self.output_names = output_names
        self.layers = nn.ModuleDict()
        self.steps: list[_Step] = []
        self._constants: dict[str, str] = {}

    def constant(self, value_name: str, tensor: torch.Tensor) -> str:
        key = f"c{len(self._constants)}"
        self.register_buffer(key, tensor)
        self._constants[value_name] = key
        return key

    def forward(self, *tensors: torch.Tensor) -> Any:
        values: dict[str, Value] = dict(zip(self.input_names, tensors, strict=True))
        for value_name, key in self._constants.items():
            values[value_name] = getattr(self, key)
        for step in self.steps:
            args = [values[n] if n else None for n in step.inputs]
            result = step.fn(self.layers[step.layer], *args) if step.layer else step.fn(*args)
            if len(step.outputs) == 1 or not isinstance(result, tuple | list):
                values[step.outputs[0]] = result
            else:
                for name, item in zip(step.outputs, result, strict=False):  # optional outputs left unset
                    values[name] = item
        outputs = [values[n] for n in self.output_names]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


def _reshape(flatten_like: list[bool]) -> Callable[..., Value]:
    """Reshape; one that flattened all but the batch axis keeps doing so, so it survives channel pruning."""

    def fn(x: torch.Tensor, shape: Value) -> torch.Tensor:
        if flatten_like and flatten_like[0]:
            return x.reshape(x.shape[0], -1)
        target = _ints(shape)
        target = [x.shape[i] if d == 0 else d for i, d in enumerate(target)]
        out = x.reshape(target)
        if not flatten_like:  # the first run decides, on the conversion's example batch
            flatten_like.append(x.dim() > 2 and out.dim() == 2 and out.shape[0] == x.shape[0])
        return out

    return fn


def _gather(axis: int) -> Callable[..., Value]:
    def fn(data: Value, indices: Value) -> Value:
        if isinstance(data, list):  # a shape: index it like a list
            idx = indices.tolist() if isinstance(indices, torch.Tensor) else indices
            return [data[i] for i in idx] if isinstance(idx, list) else data[idx]
        ax = _axis(axis, data.dim())
        idx = indices if isinstance(indices, torch.Tensor) else torch.tensor(indices)
        picked = data.index_select(ax, idx.reshape(-1).long())
        return picked.reshape(list(data.shape[:ax]) + list(idx.shape) + list(data.shape[ax + 1 :]))

    return fn


def _concat(axis: int) -> Callable[..., Value]:
    def fn(*items: Value) -> Value:
        if any(isinstance(i, list) or not isinstance(i, torch.Tensor) for i in items):
            out: list[int] = []
            for item in items:
                out += _ints(item)
            return out
        return torch.cat(items, dim=axis)

    return fn


def _unsqueeze(axes_attr: list[int] | None) -> Callable[..., Value]:
    def fn(x: Value, axes: Value = None) -> Value:
        dims = axes_attr if axes_attr is not None else _ints(axes)
        if not isinstance(x, torch.Tensor):
            return _ints(x)
        for d in sorted(_axis(a, x.dim() + len(dims)) for a in dims):
            x = x.unsqueeze(d)
        return x

    return fn


def _squeeze(axes_attr: list[int] | None) -> Callable[..., Value]:
    def fn(x: torch.Tensor, axes: Value = None) -> torch.Tensor:
        dims = axes_attr if axes_attr is not None else (_ints(axes) if axes is not None else None)
        if dims is None:
            return x.squeeze()
        return x.squeeze(tuple(_axis(a, x.dim()) for a in dims))

    return fn


def _binary(op: Callable[[Any, Any], Any]) -> Callable[..., Value]:
    def fn(a: Value, b: Value) -> Value:
        return op(a, b)

    return fn


def _pool(kind: str, attrs: dict[str, Any], spatial: int) -> Callable[..., Value]:
    kernel = tuple(attrs["kernel_shape"])
    strides = tuple(attrs.get("strides", [1] * spatial))
    padding, explicit = _pads(list(attrs.get("pads", [0] * 2 * spatial)), spatial)
    ceil = bool(attrs.get("ceil_mode", 0))
    dilations = tuple(attrs.get("dilations", [1] * spatial))
    include_pad = bool(attrs.get("count_include_pad", 0))

    def fn(x: torch.Tensor) -> torch.Tensor:
        if explicit is not None:
            x = F.pad(x, explicit, value=-math.inf if kind == "max" else 0.0)
        if kind == "max":
            pool = F.max_pool2d if spatial == 2 else F.max_pool1d
            return pool(x, kernel, strides, padding, dilations, ceil_mode=ceil)  # type: ignore[operator]
        avg = F.avg_pool2d if spatial == 2 else F.avg_pool1d
        return avg(x, kernel, strides, padding, ceil_mode=ceil, count_include_pad=include_pad)  # type: ignore[operator]

    return fn


def _softmax(axis: int, log: bool) -> Callable[..., Value]:
    def fn(x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(x, dim=axis) if log else F.softmax(x, dim=axis)

    return fn


def _transpose(perm: list[int] | None) -> Callable[..., Value]:
    def fn(x: torch.Tensor) -> torch.Tensor:
        return x.permute(perm if perm is not None else list(reversed(range(x.dim()))))

    return fn


def _flatten(axis: int) -> Callable[..., Value]:
    def fn(x: torch.Tensor) -> torch.Tensor:
        ax = _axis(axis, x.dim())
        return x.reshape(int(np.prod(x.shape[:ax])) if ax else 1, -1) if ax != 1 else x.reshape(x.shape[0], -1)

    return fn


def _reduce_mean(attrs: dict[str, Any]) -> Callable[..., Value]:
    keep = bool(attrs.get("keepdims", 1))

    def fn(x: torch.Tensor, axes: Value = None) -> torch.Tensor:
        dims = attrs.get("axes") or (_ints(axes) if axes is not None else list(range(x.dim())))
        return x.mean(dim=tuple(dims), keepdim=keep)

    return fn


def _call(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return layer(x)  # type: ignore[no-any-return]


def _shape(x: torch.Tensor) -> list[int]:
    return list(x.shape)


def _cast(to: int) -> Callable[..., Value]:
    dtype = {
        1: torch.float32,
        6: torch.int32,
        7: torch.int64,
        9: torch.bool,
        10: torch.float16,
        11: torch.float64,
        16: torch.bfloat16,
    }.get(to)

    def fn(x: Value) -> Value:
        if not isinstance(x, torch.Tensor):
            return x
        return x.to(dtype) if dtype is not None else x

    return fn


def _clip(attrs: dict[str, Any]) -> Callable[..., Value]:
    def fn(x: torch.Tensor, low: Value = None, high: Value = None) -> torch.Tensor:
        lo = low if low is not None else attrs.get("min")
        hi = high if high is not None else attrs.get("max")
        return torch.clamp(x, lo, hi)

    return fn


ELEMENTWISE: dict[str, Callable[..., Value]] = {
    "Relu": F.relu,
    "Sigmoid": torch.sigmoid,
    "Tanh": torch.tanh,
    "Erf": torch.erf,
    "Sqrt": torch.sqrt,
    "Exp": torch.exp,
    "Log": torch.log,
    "Neg": torch.neg,
    "Abs": torch.abs,
    "Identity": lambda x: x,
    "Dropout": lambda x, *_: x,
    "Add": _binary(lambda a, b: a + b),
    "Sub": _binary(lambda a, b: a - b),
    "Mul": _binary(lambda a, b: a * b),
    "Div": _binary(lambda a, b: a / b),
    "Pow": _binary(torch.pow),
    "MatMul": _binary(torch.matmul),
    "Shape": _shape,
}
SUPPORTED = sorted(
    set(ELEMENTWISE)
    | {
        "Conv",
        "Gemm",
        "BatchNormalization",
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "Flatten",
        "Reshape",
        "Concat",
        "Transpose",
        "Constant",
        "Gather",
        "Softmax",
        "LogSoftmax",
        "Gelu",
        "Unsqueeze",
        "Squeeze",
        "ReduceMean",
        "Cast",
        "Clip",
        "LeakyRelu",
    }
)


class _Builder:
    def __init__(self, model: onnx.ModelProto) -> None:
        graph = model.graph
        self.graph = graph
        self.init = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        init_names = set(self.init)
        inputs = [i.name for i in graph.input if i.name not in init_names]
        self.module = OnnxModule(inputs, [o.name for o in graph.output])
        self.consumers: dict[str, int] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers[name] = self.consumers.get(name, 0) + 1
        for out in graph.output:
            self.consumers[out.name] = self.consumers.get(out.name, 0) + 1
        inferred = onnx.shape_inference.infer_shapes(model)
        self.ranks = {
            v.name: len(v.type.tensor_type.shape.dim)
            for v in list(inferred.graph.value_info) + list(inferred.graph.input)
            if v.type.tensor_type.HasField("shape")
        }
        self.used_constants: set[str] = set()
        self.fused: set[str] = set()
        self.layer: str | None = None
        """the layer the node being built was given, if any"""

    def _layer_name(self, weight: str, index: int) -> str:
        base = re.sub(r"[^0-9A-Za-z_]", "_", re.sub(r"\.weight$", "", weight)) or f"node{index}"
        name = f"l_{base}"
        while name in self.module.layers:
            name += "_"
        return name

    def _add_layer(self, layer: nn.Module, weight: str, index: int) -> str:
        name = self._layer_name(weight, index)
        self.module.layers[name] = layer
        return name

    def _param(self, name: str) -> torch.Tensor:
        return torch.from_numpy(np.array(self.init[name], dtype=np.float32))

    def _use(self, names: list[str]) -> None:
        for n in names:
            if n in self.init:
                self.used_constants.add(n)

    def _conv(self, node: onnx.NodeProto, index: int) -> Callable[..., Value] | None:
        attrs = _attrs(node)
        if len(node.input) < 2 or node.input[1] not in self.init:
            return None
        weight = self._param(node.input[1])
        spatial = weight.dim() - 2
        if spatial not in (1, 2) or attrs.get("auto_pad", b"NOTSET") not in (
            b"NOTSET",
            b"VALID",
            "NOTSET",
            "VALID",
        ):
            return None
        padding, explicit = _pads(list(attrs.get("pads", [0] * 2 * spatial)), spatial)
        bias = len(node.input) > 2 and node.input[2] in self.init
        group = int(attrs.get("group", 1))
        cls = nn.Conv2d if spatial == 2 else nn.Conv1d
        layer = cls(
            weight.shape[1] * group,
            weight.shape[0],
            tuple(weight.shape[2:]),  # type: ignore[arg-type]
            stride=tuple(attrs.get("strides", [1] * spatial)),
            padding=padding,  # type: ignore[arg-type]
            dilation=tuple(attrs.get("dilations", [1] * spatial)),
            groups=group,
            bias=bias,
        )
        with torch.no_grad():
            layer.weight.copy_(weight)
            if bias:
                layer.bias.copy_(self._param(node.input[2]))  # type: ignore[union-attr]
        self.layer = self._add_layer(layer, node.input[1], index)
        if explicit is None:
            return _call
        return lambda module, x: module(F.pad(x, explicit))

    def _linear(self, weight_t: np.ndarray, bias: np.ndarray | None, name: str, index: int) -> str:
        """`weight_t` is [in, out] (ONNX's MatMul/Gemm layout); nn.Linear holds [out, in]."""
        layer = nn.Linear(weight_t.shape[0], weight_t.shape[1], bias=bias is not None)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight_t.T, dtype=np.float32)))
            if bias is not None:
                layer.bias.copy_(torch.from_numpy(np.array(bias, dtype=np.float32)))  # type: ignore[union-attr]
        return self._add_layer(layer, name, index)

    def _gemm(self, node: onnx.NodeProto, index: int) -> Callable[..., Value] | None:
        attrs = _attrs(node)
        if attrs.get("transA", 0) or node.input[1] not in self.init or self.init[node.input[1]].ndim != 2:
            return None
        b = self.init[node.input[1]] * float(attrs.get("alpha", 1.0))
        weight_t = b.T if attrs.get("transB", 0) else b
        bias = None
        if len(node.input) > 2 and node.input[2]:
            if node.input[2] not in self.init or self.init[node.input[2]].ndim > 1:
                return None
            bias = np.broadcast_to(self.init[node.input[2]] * float(attrs.get("beta", 1.0)), (weight_t.shape[1],))
        self.layer = self._linear(weight_t, bias, node.input[1], index)
        return _call

    def _matmul(self, node: onnx.NodeProto, index: int, nodes: list[onnx.NodeProto]) -> Callable[..., Value] | None:
        if node.input[1] not in self.init or self.init[node.input[1]].ndim != 2:
            return None
        bias = None
        out = node.output[0]
        follower = next((n for n in nodes[index + 1 :] if out in n.input), None)
        if follower is not None and follower.op_type == "Add" and self.consumers.get(out) == 1:
            other = next(n for n in follower.input if n != out)
            if other in self.init and self.init[other].ndim == 1:
                bias = self.init[other]
                self.fused.add(follower.name or f"#{nodes.index(follower)}")
                node_outputs = list(follower.output)
                layer = self._linear(self.init[node.input[1]], bias, node.input[1], index)
                self.module.steps.append(_Step(_call, [node.input[0]], node_outputs, layer))
                return None
        self.layer = self._linear(self.init[node.input[1]], None, node.input[1], index)
        return _call

    def _batchnorm(self, node: onnx.NodeProto, index: int) -> Callable[..., Value] | None:
        if not all(n in self.init for n in node.input[1:5]):
            return None
        attrs = _attrs(node)
        scale = self._param(node.input[1])
        rank = self.ranks.get(node.input[0], 4)
        cls = nn.BatchNorm2d if rank == 4 else nn.BatchNorm1d
        layer = cls(
            scale.shape[0],
            eps=float(attrs.get("epsilon", 1e-5)),
            momentum=1 - float(attrs.get("momentum", 0.9)),
        )
        with torch.no_grad():
            layer.weight.copy_(scale)
            layer.bias.copy_(self._param(node.input[2]))
            layer.running_mean.copy_(self._param(node.input[3]))  # type: ignore[union-attr]
            layer.running_var.copy_(self._param(node.input[4]))  # type: ignore[union-attr]
        self.layer = self._add_layer(layer, node.input[1], index)
        return _call

    def _function(self, node: onnx.NodeProto) -> Callable[..., Value] | None:
        op, attrs = node.op_type, _attrs(node)
        if op in ELEMENTWISE:
            return ELEMENTWISE[op]
        spatial = max(self.ranks.get(node.input[0], 4) - 2, 1) if node.input else 2
        table: dict[str, Callable[[], Callable[..., Value] | None]] = {
            "MaxPool": lambda: _pool("max", attrs, spatial) if spatial in (1, 2) else None,
            "AveragePool": lambda: _pool("avg", attrs, spatial) if spatial in (1, 2) else None,
            "GlobalAveragePool": lambda: lambda x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True),
            "Flatten": lambda: _flatten(int(attrs.get("axis", 1))),
            "Reshape": lambda: _reshape([]),
            "Concat": lambda: _concat(int(attrs["axis"])),
            "Transpose": lambda: _transpose(list(attrs["perm"]) if "perm" in attrs else None),
            "Gather": lambda: _gather(int(attrs.get("axis", 0))),
            "Softmax": lambda: _softmax(int(attrs.get("axis", -1)), False),
            "LogSoftmax": lambda: _softmax(int(attrs.get("axis", -1)), True),
            "Gelu": lambda: (
                lambda x: F.gelu(x, approximate="tanh" if attrs.get("approximate") in (b"tanh", "tanh") else "none")
            ),
            "LeakyRelu": lambda: lambda x: F.leaky_relu(x, float(attrs.get("alpha", 0.01))),
            "Unsqueeze": lambda: _unsqueeze(list(attrs["axes"]) if "axes" in attrs else None),
            "Squeeze": lambda: _squeeze(list(attrs["axes"]) if "axes" in attrs else None),
            "ReduceMean": lambda: _reduce_mean(attrs),
            "Cast": lambda: _cast(int(attrs["to"])),
            "Clip": lambda: _clip(attrs),
        }
        make = table.get(op)
        return make() if make is not None else None

    def build(self) -> OnnxModule:
        nodes = list(self.graph.node)
        unsupported = sorted(
            {n.op_type for n in nodes if n.op_type not in SUPPORTED or (n.domain not in ("", "ai.onnx"))}
        )
        if unsupported:
            raise ConversionUnsupported(unsupported)
        failed: set[str] = set()
        for index, node in enumerate(nodes):
            if (node.name or f"#{index}") in self.fused:
                continue
            if node.op_type == "Constant":
                attrs = _attrs(node)
                if "value" not in attrs:
                    failed.add("Constant (only `value` tensors)")
                    continue
                self.module.constant(node.output[0], torch.from_numpy(numpy_helper.to_array(attrs["value"]).copy()))
                continue
            fn: Callable[..., Value] | None
            self.layer = None
            if node.op_type == "Conv":
                fn = self._conv(node, index)
            elif node.op_type == "Gemm":
                fn = self._gemm(node, index)
            elif node.op_type == "MatMul" and node.input[1] in self.init:
                fn = self._matmul(node, index, nodes)
                if fn is None and self.init[node.input[1]].ndim == 2:
                    continue  # fused with its bias Add; the step is already in place
            elif node.op_type == "BatchNormalization":
                fn = self._batchnorm(node, index)
            else:
                fn = self._function(node)
                self._use(list(node.input))
            if fn is None:
                failed.add(f"{node.op_type} (this form: weights not constant or attributes not covered)")
                continue
            weights = {
                "Conv": node.input[1:3],
                "Gemm": node.input[1:3],
                "MatMul": node.input[1:2],
                "BatchNormalization": node.input[1:5],
            }.get(node.op_type, [])
            inputs = [n if n not in weights else "" for n in node.input]
            self.module.steps.append(
                _Step(fn, [n for n in inputs if n] if weights else inputs, list(node.output), self.layer)
            )
        if failed:
            raise ConversionUnsupported(sorted(failed))
        for name in sorted(self.used_constants):
            self.module.constant(name, torch.from_numpy(np.array(self.init[name]).copy()))
        return self.module


def onnx_to_torch(model: onnx.ModelProto, example: dict[str, np.ndarray]) -> OnnxModule:
    """Convert, then run once on `example` so shape-dependent choices (Reshape as flatten) are fixed."""
    module = _Builder(model).build().eval()
    with torch.inference_mode():
        module(*[torch.from_numpy(example[n]) for n in module.input_names])
    return module
