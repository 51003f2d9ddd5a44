"""Canonicalise an uploaded ONNX model once, before its first step, so every pass meets the same graph
whatever exporter wrote it. Well-kept tools do the work: onnx's version converter brings an old opset up to
MIN_OPSET (and the IR version with it), onnx's shape inference and onnxruntime's symbolic shape inference
(the one its quantization pre-processing runs, which handles dynamic dimensions) type every tensor. Two
rewrites are ours because no tool does them alone: initializers listed as graph inputs (IR < 4, Caffe2-era
exporters) are dropped from the inputs, and `Constant` nodes holding tensors (Paddle2ONNX's weights) become
initializers, which is where quantizers look for weights.

The pipeline checks the canonical model's outputs against the upload's like any conversion and reports
what changed (app.schemas.reports.Canonical)."""

import logging
from pathlib import Path
from typing import Any

import onnx
from onnx import helper, shape_inference, version_converter

log = logging.getLogger(__name__)
MIN_OPSET = 13
"""The lowest default-domain opset the passes get: onnxruntime's quantizers and fusions target 13 and up."""
LARGE = 1_800_000_000
"""bytes above which shape inference works on the model's file (protobuf's 2 GB limit) and the model is
saved with external data"""


def canonicalise(source: Path, target: Path) -> dict[str, Any]:
    """Write the canonical form of `source` at `target`; returns what changed (the report's `canonical`)."""
    model = onnx.load(str(source))
    before = _versions(model)
    changes = {
        "initializers_removed_from_inputs": initializers_out_of_inputs(model),
        "constants_to_initializers": constants_to_initializers(model),
    }
    model, opset_note = raise_opset(model)
    model, shapes = infer_shapes(model)
    after = _versions(model)
    save(model, target)
    refused = load_error(target)
    if refused is not None:  # inferred types onnxruntime disagrees with: hand on the graph untyped instead
        del model.graph.value_info[:]
        save(model, target)
        shapes = f"dropped: onnxruntime refused the inferred types ({refused})"
    return {
        "ir_version": {"before": before[0], "after": after[0]},
        "opset": {"before": before[1], "after": after[1]},
        **changes,
        "shape_inference": shapes,
        "notes": [opset_note] if opset_note else [],
        "changed": before != after or any(changes.values()),
        "tools": [f"onnx {onnx.__version__} (version_converter, shape_inference)", _ort_tool()],
    }


def save(model: onnx.ModelProto, target: Path) -> None:
    if model.ByteSize() > LARGE:
        onnx.save(model, str(target), save_as_external_data=True, location=f"{target.name}.data")
    else:
        onnx.save(model, str(target))


def load_error(path: Path) -> str | None:
    """Why onnxruntime refuses the model, or None when it loads."""
    import onnxruntime

    try:
        onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises one type per status code; the message is what matters
        return str(exc)[:300]
    return None


def _versions(model: onnx.ModelProto) -> tuple[int, int]:
    return model.ir_version, default_opset(model)


def default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _ort_tool() -> str:
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__} (SymbolicShapeInference)"


def initializers_out_of_inputs(model: onnx.ModelProto) -> int:
    """Drop graph inputs that are also initializers: with them listed, quantizers and calibrators treat
    the weights as data the caller must feed. Returns how many were dropped."""
    stored = {i.name for i in model.graph.initializer}
    kept = [i for i in model.graph.input if i.name not in stored]
    dropped = len(model.graph.input) - len(kept)
    if dropped:
        del model.graph.input[:]
        model.graph.input.extend(kept)
        model.ir_version = max(model.ir_version, 4)  # from IR 4 on, an initializer need not be an input
    return dropped


def constants_to_initializers(model: onnx.ModelProto) -> int:
    """Turn the main graph's `Constant` nodes holding a tensor into initializers (a Constant that is itself a
    graph output stays a node). Returns how many were turned."""
    outputs = {o.name for o in model.graph.output}
    keep, moved = [], []
    for node in model.graph.node:
        value = next((a for a in node.attribute if a.name == "value" and a.type == onnx.AttributeProto.TENSOR), None)
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and value and node.output[0] not in outputs:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(value.t)
            tensor.name = node.output[0]
            moved.append(tensor)
        else:
            keep.append(node)
    if moved:
        del model.graph.node[:]
        model.graph.node.extend(keep)
        model.graph.initializer.extend(moved)
        model.ir_version = max(model.ir_version, 4)
    return len(moved)


def raise_opset(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str | None]:
    """The model at MIN_OPSET when it is below it, with the IR version that opset needs. A model the
    converter cannot bring up stays at its own opset, with a note saying so (the passes may still work)."""
    opset = default_opset(model)
    if opset >= MIN_OPSET:
        return model, None
    try:
        converted = version_converter.convert_version(model, MIN_OPSET)
    except Exception as exc:  # the converter raises bare RuntimeErrors per missing adapter; the model stays
        log.warning("opset %s -> %s failed: %s", opset, MIN_OPSET, exc)
        return model, f"kept opset {opset}: onnx's version converter could not reach {MIN_OPSET} ({exc})"
    minimum = helper.find_min_ir_version_for(list(converted.opset_import), ignore_unknown=True)
    converted.ir_version = max(converted.ir_version, minimum)
    return converted, None


def infer_shapes(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """Every tensor typed: onnxruntime's symbolic inference (dynamic dims get names, contrib ops are known),
    else onnx's own; says which one typed the graph."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    if model.ByteSize() > LARGE:
        return model, "skipped: the model is larger than protobuf's 2 GB"
    del model.graph.value_info[:]  # stale or partial types from the exporter would be trusted over inference
    try:
        inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True, guess_output_rank=True)
    except Exception as exc:  # symbolic inference raises on operators it lacks; onnx's inference still runs
        log.warning("symbolic shape inference failed: %s", exc)
        inferred = None
    if inferred is not None:
        return inferred, "symbolic (onnxruntime)"
    return shape_inference.infer_shapes(model, data_prop=True), "onnx"
