"""The graph walk: every node's maker (by operator family) gives a step; constants become python values
(small int vectors: shapes) or buffers; what is not covered is collected and named in one refusal."""

from collections.abc import Callable

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from workers.conversion.onnx_to_torch import elementwise, layers, recurrent, reduce, resize, shape
from workers.conversion.onnx_to_torch.module import ConversionUnsupported, FormUnsupported, OnnxModule, Step, Value
from workers.conversion.onnx_to_torch.node import PYTHON_VECTOR_MAX, Built, Graph, Node

OPS: dict[str, Callable[[Node], Built | Callable[..., Value]]] = {
    **elementwise.OPS,
    **shape.OPS,
    **reduce.OPS,
    **resize.OPS,
    **layers.OPS,
    **recurrent.OPS,
}
SUPPORTED = sorted({*OPS, "Constant"})


def _constant_value(node: onnx.NodeProto) -> np.ndarray:
    attr = node.attribute[0]
    value = onnx.helper.get_attribute_value(attr)
    if attr.name in ("value", "sparse_value"):
        return numpy_helper.to_array(value if attr.name == "value" else value.values)
    dtypes = {"value_int": np.int64, "value_ints": np.int64, "value_float": np.float32, "value_floats": np.float32}
    if attr.name not in dtypes:
        raise FormUnsupported(f"attribute {attr.name}")
    return np.array(value, dtype=dtypes[attr.name])


def runtime_constant(array: np.ndarray) -> Value:
    """A python int/list for a small int vector (a shape, axes, indices), a tensor otherwise."""
    if array.dtype.kind in "iu" and array.ndim <= 1 and array.size <= PYTHON_VECTOR_MAX:
        return int(array) if array.ndim == 0 else [int(v) for v in array]
    return torch.from_numpy(np.array(array).copy())


def _graph(model: onnx.ModelProto, module: OnnxModule) -> Graph:
    graph = model.graph
    static = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    try:
        inferred = onnx.shape_inference.infer_shapes(model).graph
    except onnx.shape_inference.InferenceError:  # ranks are a hint (BatchNorm's kind); a model may not infer
        inferred = graph
    shaped = [
        v
        for v in list(inferred.value_info) + list(inferred.input) + list(inferred.output)
        if v.type.tensor_type.HasField("shape")
    ]
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in shaped}
    dynamic_tail = {
        v.name for v in shaped if any(not d.HasField("dim_value") for d in v.type.tensor_type.shape.dim[1:])
    }
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    return Graph(module, opset, static, ranks, dynamic_tail, consumers)


def _folded(step: Step, graph: Graph) -> bool:
    """A function step whose inputs are all constants (an Identity, Transpose or Cast of a weight) is computed
    now and its outputs become constants, so the layer they feed sees a constant weight."""
    if step.layer or not step.inputs or not all(n in graph.static for n in step.inputs if n):
        return False
    args = [runtime_constant(graph.static[n]) if n else None for n in step.inputs]
    with torch.inference_mode():
        result = step.fn(*args)
    results = list(result) if len(step.outputs) > 1 else [result]
    for name, value in zip(step.outputs, results, strict=False):
        if name:
            graph.static[name] = value.numpy() if isinstance(value, torch.Tensor) else np.array(value)
    return True


def _step(node: Node) -> Step:
    built = OPS[node.op](node)
    if not isinstance(built, Built):
        built = Built(built)
    inputs = built.inputs if built.inputs is not None else node.inputs
    return Step(built.fn, inputs, built.outputs or node.outputs, built.layer)


def build(model: onnx.ModelProto) -> OnnxModule:
    graph_proto = model.graph
    init_names = {i.name for i in graph_proto.initializer}
    inputs = [i.name for i in graph_proto.input if i.name not in init_names]
    module = OnnxModule(inputs, [o.name for o in graph_proto.output])
    graph = _graph(model, module)
    missing = sorted(
        {n.op_type for n in graph_proto.node if n.op_type not in SUPPORTED or n.domain not in ("", "ai.onnx")}
    )
    if missing:
        raise ConversionUnsupported(missing)
    failed: set[str] = set()
    for proto in graph_proto.node:
        if id(proto) in graph.skipped:
            continue
        try:
            if proto.op_type == "Constant":
                graph.static[proto.output[0]] = _constant_value(proto)
                continue
            step = _step(Node(proto, graph))
            if not _folded(step, graph):
                module.steps.append(step)
        except FormUnsupported as exc:
            failed.add(f"{proto.op_type} ({exc})")
    if failed:
        raise ConversionUnsupported(sorted(failed))
    needed = {name for step in module.steps for name in step.inputs} | set(module.output_names)
    for name in sorted(needed & set(graph.static)):
        module.constant(name, runtime_constant(graph.static[name]))
    return module


def onnx_to_torch(model: onnx.ModelProto, example: dict[str, np.ndarray]) -> OnnxModule:
    """Convert, then run once on `example` so shape-dependent choices (Reshape as flatten) are fixed and a
    form only seen at run time (a computed Resize scale on the batch axis) is refused here."""
    module = build(model).eval()
    try:
        with torch.inference_mode():
            module(*[torch.from_numpy(example[n]) for n in module.input_names])
    except FormUnsupported as exc:
        raise ConversionUnsupported([str(exc)]) from exc
    return module
