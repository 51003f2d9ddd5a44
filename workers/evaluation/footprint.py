"""What a model weighs: size on disk, parameter count, sparsity and compute per sample (MACs and FLOPs).

ONNX compute is counted from the graph after shape inference at the evaluation shapes: Conv, Gemm,
MatMul (and their integer/QLinear forms) as multiply-accumulates, pooling by window, the common
elementwise and normalisation ops as FLOPs per output element. Torch compute comes from torch's own
FlopCounterMode on one evaluation batch. Both are divided by the batch size to give a per-sample figure.
"""

import math
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

from workers.runtime import Feeds, device_of

# FLOPs per output element for ops that are not multiply-accumulates.
ELEMENTWISE_FLOPS = {
    "Add": 1,
    "Sub": 1,
    "Mul": 1,
    "Div": 1,
    "Relu": 1,
    "LeakyRelu": 1,
    "PRelu": 1,
    "Clip": 1,
    "Max": 1,
    "Min": 1,
    "Sigmoid": 4,
    "Tanh": 4,
    "Erf": 4,
    "Exp": 1,
    "Log": 1,
    "Sqrt": 1,
    "Pow": 1,
    "Neg": 1,
    "Abs": 1,
    "Where": 1,
    "HardSigmoid": 2,
    "HardSwish": 3,
    "Gelu": 8,
    "FastGelu": 8,
    "BiasGelu": 9,
    "Softmax": 3,
    "LogSoftmax": 3,
    "BatchNormalization": 2,
    "LayerNormalization": 5,
    "SkipLayerNormalization": 6,
    "InstanceNormalization": 5,
    "ReduceMean": 1,
    "ReduceSum": 1,
    "DequantizeLinear": 2,
    "QuantizeLinear": 2,
}
# node type -> (index of the weight/second operand input, how its MACs are counted)
MAC_OPS = {
    "Conv": 1,
    "ConvInteger": 1,
    "QLinearConv": 3,
    "ConvTranspose": 1,
    "MatMul": 0,
    "MatMulInteger": 0,
    "QLinearMatMul": 0,
    "Gemm": 0,
    "FusedMatMul": 0,
}


def _shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    def dims(value: onnx.ValueInfoProto) -> list[int | None]:
        return [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]

    graph = model.graph
    found: dict[str, list[int | None]] = {i.name: list(i.dims) for i in graph.initializer}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
            found[value.name] = dims(value)
    return found


def _node_cost(node: onnx.NodeProto, shapes: dict[str, list[int | None]]) -> tuple[int, int] | None:
    """(MACs, other FLOPs) of one node, or None when its shapes are unknown."""

    def known(name: str | None) -> list[int] | None:
        shape = shapes.get(name) if name else None
        if shape is None or not all(isinstance(d, int) and d > 0 for d in shape):
            return None
        return [int(d) for d in shape if d is not None]

    def operand(index: int) -> list[int] | None:
        return known(node.input[index]) if len(node.input) > index else None

    out = known(node.output[0]) if node.output else None
    op = node.op_type
    if op in MAC_OPS:
        w = operand(MAC_OPS[op])
        if out is None or w is None:
            return None
        if op in ("Conv", "ConvInteger", "QLinearConv"):
            return math.prod(out) * math.prod(w[1:]), 0
        if op == "ConvTranspose":
            x = operand(0)
            return (math.prod(x) * math.prod(w[1:]), 0) if x else None
        if op == "Gemm":
            trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
            k = w[0] if trans_a else w[1]
            return math.prod(out) * k, math.prod(out) if len(node.input) > 2 else 0
        return math.prod(out) * w[-1], 0
    if op in ("MaxPool", "AveragePool"):
        kernel = next((list(a.ints) for a in node.attribute if a.name == "kernel_shape"), None)
        return (0, math.prod(out) * math.prod(kernel)) if out and kernel else None
    if op in ("GlobalAveragePool", "GlobalMaxPool"):
        x = operand(0)
        return (0, math.prod(x)) if x else None
    if op in ELEMENTWISE_FLOPS:
        return (0, math.prod(out) * ELEMENTWISE_FLOPS[op]) if out else None
    return 0, 0


# onnxruntime's fused contrib ops (written by its offline optimizer) and the standard op each one extends;
# ONNX shape inference knows only the standard ones, so the counting copy uses those.
FUSED = {"FusedGemm": "Gemm", "FusedConv": "Conv"}
FUSED_ONLY_ATTRIBUTES = ("activation", "activation_alpha", "activation_beta", "activation_gamma")


def _standardise(model: onnx.ModelProto) -> None:
    for node in model.graph.node:
        if node.domain == "com.microsoft" and node.op_type in FUSED:
            node.op_type, node.domain = FUSED[node.op_type], ""
            kept = [a for a in node.attribute if a.name not in FUSED_ONLY_ATTRIBUTES]
            del node.attribute[:]
            node.attribute.extend(kept)


def onnx_compute(path: Path, shapes: dict[str, list[int]]) -> dict[str, Any]:
    """MACs and FLOPs per sample of the ONNX model at the given input shapes (batch on axis 0); None when
    a matmul or convolution could not be counted, rather than a figure that leaves it out."""
    model = onnx.load(str(path), load_external_data=False)
    _standardise(model)
    for value in model.graph.input:
        if value.name in shapes and value.type.HasField("tensor_type"):
            for dim, size in zip(value.type.tensor_type.shape.dim, shapes[value.name], strict=False):
                dim.Clear()
                dim.dim_value = size
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    known = _shapes(inferred)
    macs = flops = 0
    uncounted: list[str] = []
    for node in inferred.graph.node:
        cost = _node_cost(node, known)
        if cost is None:
            uncounted.append(node.op_type)
        else:
            macs, flops = macs + cost[0], flops + cost[1]
    batch = max(1, next(iter(shapes.values()))[0]) if shapes else 1
    complete = not set(uncounted) & set(MAC_OPS)
    return {
        "macs_per_sample": macs // batch if complete else None,
        "flops_per_sample": (2 * macs + flops) // batch if complete else None,
        "compute_method": "onnx graph, shape inference",
        "uncounted_ops": sorted(set(uncounted)),
    }


def torch_compute(module: Any, feeds: Feeds, input_names: list[str]) -> dict[str, Any]:
    """FLOPs per sample from torch's FlopCounterMode (matmuls and convolutions; MACs = FLOPs / 2)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    tensors = [torch.from_numpy(feeds[n]).to(device_of(module)) for n in input_names]
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        module(*tensors)
    total = int(counter.get_total_flops())
    batch = max(1, tensors[0].shape[0]) if tensors and tensors[0].ndim else 1
    return {
        "macs_per_sample": total // 2 // batch,
        "flops_per_sample": total // batch,
        "compute_method": "torch FlopCounterMode",
        "uncounted_ops": [],
    }


def onnx_weights(path: Path) -> dict[str, Any]:
    """Size on disk (the .onnx file and its external data), parameter count, and sparsity: the share of
    exact zeros among weight tensors (initializers of rank 2 or more)."""
    model = onnx.load(str(path), load_external_data=False)
    size = path.stat().st_size
    for location in {e.value for i in model.graph.initializer for e in i.external_data if e.key == "location"}:
        size += (path.parent / location).stat().st_size
    if size > path.stat().st_size:
        onnx.load_external_data_for_model(model, str(path.parent))
    params = zeros = weights = 0
    for init in model.graph.initializer:
        count = math.prod(init.dims)
        params += count
        if len(init.dims) >= 2:
            weights += count
            zeros += int(np.count_nonzero(numpy_helper.to_array(init) == 0))
    return {"size_bytes": size, "param_count": params, "sparsity": zeros / weights if weights else 0.0}


def torch_weights(module: Any) -> dict[str, Any]:
    """Parameter count and sparsity of a torch module; it has no file, so its size is its parameters' bytes
    in memory."""
    params = zeros = weights = size = 0
    for p in module.parameters():
        params += p.numel()
        size += p.numel() * p.element_size()
        if p.ndim >= 2:
            weights += p.numel()
            zeros += int((p == 0).sum())
    return {
        "size_bytes": None,
        "memory_bytes": size,
        "param_count": params,
        "sparsity": zeros / weights if weights else 0.0,
    }


def deployment_size(handle: Any) -> int:
    """Size on disk of an OpenVINO IR (its .xml and .bin) or a TFLite file."""
    files = [handle.path, handle.path.with_suffix(".bin")] if handle.kind == "openvino" else [handle.path]
    return sum(f.stat().st_size for f in files)


def weights(handle: Any) -> dict[str, Any]:
    """Size on disk, parameter count and sparsity of a pipeline handle: the one place each is computed. A
    torch module loaded back from its exported file (pt2, TorchScript) has that file's size; an OpenVINO or
    TFLite model its own files' size, and the parameters of the ONNX it was converted from (a conversion
    keeps them)."""
    if handle.kind == "onnx":
        return onnx_weights(handle.path)
    if handle.kind in ("openvino", "tflite"):
        return {**onnx_weights(handle.source), "size_bytes": deployment_size(handle)}
    figures = torch_weights(handle.module)
    figures["size_bytes"] = handle.path.stat().st_size if handle.path is not None else None
    return figures


def footprint(handle: Any, shapes: dict[str, list[int]], example: Feeds) -> dict[str, Any]:
    """Weights and compute of a pipeline handle (ONNX file or torch module). Compute is counted at the
    example batch's own shapes for both forms (a text batch's sequence length is its own, not the one in
    `shapes`), so an original and its result are counted at the same shapes."""
    if handle.kind != "torch":  # an OpenVINO or TFLite model is counted on the ONNX it was converted from
        at = {**shapes, **{name: list(array.shape) for name, array in example.items() if name in shapes}}
        return {**weights(handle), **onnx_compute(handle.source or handle.path, at)}
    return {**weights(handle), **torch_compute(handle.module, example, handle.input_names)}
