"""onnxruntime's transformer optimizer for BERT-like encoders: Attention, SkipLayerNormalization and
BiasGelu/FastGelu fusions that onnxruntime does not apply at load time on its own.

Two graph rewrites come first so that the optimizer's patterns match what torch.onnx's dynamo exporter
writes for a transformers 5.x encoder exported with an additive 4-D mask (passes.convert.transformer_export):
the exporter merges the mask's two Unsqueezes into one with two axes, and scales the attention scores with
a Mul after the MatMul where the optimizer looks for a Div. Both rewrites are exact (a reciprocal of a
scalar), and the fused graph is kept only when its outputs match the unfused graph's on the example batch.
"""

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from workers.runtime import Feeds, onnx_session

log = logging.getLogger(__name__)
FUSED_OPS = ("Attention", "MultiHeadAttention", "SkipLayerNormalization", "BiasGelu", "FastGelu", "Gelu")
MIN_COSINE = 0.99999
"""the fused graph's outputs against the unfused graph's: fusions reorder float sums, never change a model"""


def is_bert_like(model: onnx.ModelProto) -> bool:
    """An encoder the BERT fusions fit: attention (Softmax over MatMul scores) and LayerNormalization."""
    ops = {n.op_type for n in model.graph.node}
    return {"Softmax", "MatMul", "LayerNormalization"} <= ops


def _constant(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] == name and node.attribute:
            return numpy_helper.to_array(node.attribute[0].t)
    return None


def split_unsqueezes(model: onnx.ModelProto) -> int:
    """Unsqueeze over several constant axes -> a chain of one-axis Unsqueezes (the mask pattern the
    optimizer matches); returns how many were split."""
    nodes, split = [], 0
    for node in model.graph.node:
        axes = _constant(model, node.input[1]) if node.op_type == "Unsqueeze" and len(node.input) == 2 else None
        if axes is None or axes.size < 2:
            nodes.append(node)
            continue
        previous = node.input[0]
        ordered = sorted(int(a) for a in axes.ravel())
        for k, axis in enumerate(ordered):
            name = f"{node.name}_axis{k}"
            model.graph.initializer.append(numpy_helper.from_array(np.array([axis], dtype=np.int64), name))
            out = node.output[0] if k == len(ordered) - 1 else f"{node.name}_out{k}"
            nodes.append(helper.make_node("Unsqueeze", [previous, name], [out], name=f"{node.name}_{k}"))
            previous = out
        split += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return split


def scale_as_division(model: onnx.ModelProto) -> int:
    """Softmax(Add(Mul(MatMul, c), mask)) -> Softmax(Add(Div(MatMul, 1/c), mask)): the optimizer finds the
    mask's Mul first when the scores are scaled by a Mul too. Returns how many were rewritten."""
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: i for i in model.graph.initializer}
    rewritten = 0
    for softmax in (n for n in model.graph.node if n.op_type == "Softmax"):
        add = producers.get(softmax.input[0])
        if add is None or add.op_type != "Add":
            continue
        for name in add.input:
            mul = producers.get(name)
            if mul is None or mul.op_type != "Mul" or mul.input[1] not in inits:
                continue
            matmul = producers.get(mul.input[0])
            scale = numpy_helper.to_array(inits[mul.input[1]])
            if matmul is None or matmul.op_type != "MatMul" or scale.size != 1 or not scale.item():
                continue
            reciprocal = f"{mul.input[1]}_reciprocal"
            if reciprocal not in inits:
                inits[reciprocal] = numpy_helper.from_array((1.0 / scale).astype(scale.dtype), reciprocal)
                model.graph.initializer.append(inits[reciprocal])
            mul.op_type = "Div"
            mul.input[1] = reciprocal
            rewritten += 1
    return rewritten


def attention_shape(model: onnx.ModelProto) -> tuple[int, int]:
    """(heads, hidden size) of the first attention: the hidden size is the query projection's bias width,
    the head size the last dimension of the reshape that splits the query into heads (constant, or the last
    constant input of a Concat; the heads dimension itself is often -1)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
    node: Any = producers.get(softmax.input[0])
    for _ in range(8):  # Softmax <- Add <- Div <- MatMul <- Transpose <- Reshape
        if node is None or node.op_type == "Reshape":
            break
        node = producers.get(node.input[0])
    projection = producers.get(node.input[0]) if node is not None and node.op_type == "Reshape" else None
    if projection is None or projection.op_type != "Add":
        return 0, 0
    bias = next((c for c in (_constant(model, i) for i in projection.input) if c is not None), None)
    shape = _constant(model, node.input[1])
    if shape is None:
        concat = producers.get(node.input[1])
        shape = _constant(model, concat.input[-1]) if concat is not None and concat.op_type == "Concat" else None
    if bias is None or bias.ndim != 1 or shape is None or int(shape.ravel()[-1]) <= 0:
        return 0, 0
    hidden, head_size = int(bias.size), int(shape.ravel()[-1])
    return (hidden // head_size, hidden) if hidden % head_size == 0 else (0, 0)


def fuse(source: Path, target: Path, example: Feeds) -> dict[str, Any]:
    """Write the fused graph to `target` when the fusions apply and keep the outputs; returns what was done:
    `applied`, the fused operator counts, the check's cosine, and why not when it was not kept."""
    from onnxruntime.transformers.optimizer import optimize_model

    model = onnx.load(str(source))
    if not is_bert_like(model):
        return {"applied": False, "reason": "not a transformer encoder (no Softmax attention with LayerNorm)"}
    rewrites = {"unsqueezes_split": split_unsqueezes(model), "scales_as_division": scale_as_division(model)}
    heads, hidden = attention_shape(model)
    prepared = target.with_name(target.stem + "-prepared.onnx")
    onnx.save(model, str(prepared))
    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    optimizer = optimize_model(str(prepared), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0)
    counts = {k: v for k, v in optimizer.get_fused_operator_statistics().items() if k in FUSED_OPS and v}
    if not counts:
        return {"applied": False, "reason": "onnxruntime's transformer optimizer found no pattern to fuse"}
    optimizer.save_model_to_file(str(target))
    cosine = _agreement(prepared, target, example)
    found = {"fused_ops": counts, "heads": heads, "hidden_size": hidden, "rewrites": rewrites, "check_cosine": cosine}
    if cosine < MIN_COSINE:
        target.unlink()
        return {"applied": False, "reason": f"the fused graph's outputs moved (cosine {cosine:.6f})", **found}
    return {"applied": True, **found}


def _agreement(before: Path, after: Path, example: Feeds) -> float:
    """The lowest per-sample cosine between the two graphs' first outputs on the example batch."""
    outputs = []
    for path in (before, after):
        session = onnx_session(path, threads=1)
        names = [i.name for i in session.get_inputs()]
        outputs.append(session.run(None, {n: example[n] for n in names})[0].astype(np.float64))
    a, b = (o.reshape(o.shape[0], -1) for o in outputs)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.min((a * b).sum(1) / np.where(norms > 0, norms, 1.0)))
