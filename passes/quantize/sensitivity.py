"""Least accuracy loss by default: keep the nodes that break a quantized model in float until the result is
above its fidelity floor, within a bounded number of attempts.

After dynamic or static int8, int4 weight-only or an fp16 conversion of an ONNX model, the result's outputs
are compared with the float model's on the job's evaluation batches (mean cosine per sample, the report's own
figure). Below the floor (the spec's `constraints.min_cosine`, else the setting for the method):

- fp16 first gets automatic mixed precision: the nodes that write or read a value outside float16's range
  (above 65504 it overflows; a weight whose nonzero values mostly fall under 2^-24 flushes to zero) stay
  float32, and the Cast pairs the converter puts between two float32 nodes are folded away, so a value kept
  in float32 never passes through float16 on its way;
- then, one attempt at a time, the node that adds the most error stays in float: every intermediate tensor
  of the float graph is compared with the same tensor of the quantized graph (relative L2 error), and a node's
  own error is the error of its outputs minus the worst error of its inputs. Only nodes the quantization
  changed are candidates; a node it left alone (kept in float, a Sigmoid after int8) that still adds error
  reads activations its producer quantized, so the producer is blamed instead.

The best attempt is kept even when none reaches the floor; the verdict then fails the job and the report says
which nodes were tried. The search stops before an attempt that would leave nothing quantized: the float model
is not a quantization, so a floor only the float model reaches (1.0) is missed, never met by giving up.

onnxconverter_common's auto mixed precision is not installed here, and it searches by bisection (many
conversions); the range check needs one run of the float model.
"""

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from app.schemas.errors import JobErrorCode
from passes.quantize.config import Config, Dynamic, Fp16, Int4, Static
from workers.context import PassContext
from workers.evaluation.fidelity import fidelity
from workers.runtime import Feeds, ModelHandle, PassFailed, onnx_session, run

Quantize = Callable[[Config, ModelHandle, PassContext], ModelHandle]
Held = Dynamic | Static | Int4 | Fp16
"""the methods held to their floor on ONNX"""
FP16_MAX = 65504.0
FP16_TINY = 2.0**-24
"""the smallest positive float16 (subnormal); nonzero magnitudes below it become zero"""
PREPROCESSED = "preprocessed.onnx"
"""where the int8 methods write the pre-processed float graph they quantize (its node names are the ones
`nodes_to_exclude` matches)"""
ORT_REFUSALS = (
    ort_errors.Fail,
    ort_errors.InvalidGraph,
    ort_errors.InvalidArgument,
    ort_errors.RuntimeException,
    ort_errors.NotImplemented,
)
ATTRIBUTION_BATCHES = 2
"""evaluation batches the per-node comparison runs on (every intermediate tensor is kept in memory)"""


@dataclass
class Kept:
    node: str
    op_type: str
    reason: str
    """fp16_range: a value outside float16's range; sensitivity: the largest error of its own"""
    detail: str


@dataclass
class Attempt:
    attempt: int
    nodes_in_float: list[str]
    cosine_mean: float | None
    met: bool


@dataclass
class Recovery:
    """What the report's step shows as `sensitivity`."""

    floor: float
    floor_source: str
    budget: int
    attempts: list[Attempt] = field(default_factory=list)
    kept_in_float: list[Kept] = field(default_factory=list)
    stopped: str | None = None
    """why the search ended below the floor"""

    def section(self, chosen: Attempt) -> dict[str, Any]:
        names = set(chosen.nodes_in_float)
        return {
            "floor": self.floor,
            "floor_source": self.floor_source,
            "budget": self.budget,
            "before": self.attempts[0].cosine_mean,
            "after": chosen.cosine_mean,
            "met": chosen.met,
            "chosen_attempt": chosen.attempt,
            "kept_in_float": [vars(k) for k in self.kept_in_float if k.node in names],
            "attempts": [vars(a) for a in self.attempts],
            "stopped": None if chosen.met else self.stopped or "the retry budget (SENSITIVITY_RETRIES) is spent",
        }


def within_floor(config: Config, source: ModelHandle, ctx: PassContext, quantize: Quantize) -> ModelHandle:
    """`quantize` the model, then keep nodes in float (as above) while the result is below its floor and
    attempts remain; the step's report gets the attempts as `ctx.sensitivity`."""
    result = quantize(config, source, ctx)
    if not isinstance(config, Dynamic | Static | Int4 | Fp16) or config.takes() != "onnx":
        return result
    assert source.path is not None and result.path is not None
    if isinstance(config, Fp16):
        fold_round_trip_casts(result.path)
    if ctx.floors is None or not ctx.evaluation:
        return result
    floor, origin = _floor(config, ctx)
    recovery = Recovery(floor, origin, ctx.floors.retries)
    reference = _outputs(source.path, source, ctx.evaluation)
    best = _score(recovery, list(config.nodes_to_exclude), result, source, reference, ctx)
    kept = list(config.nodes_to_exclude)
    best_file = ctx.path("best-attempt.onnx")
    shutil.copyfile(result.path, best_file)
    float_graph = quantizer_input(config, source.path, ctx)
    while not recovery.attempts[-1].met and len(recovery.attempts) <= recovery.budget:
        try:
            found = _more_nodes_in_float(config, float_graph, result.path, kept, ctx, recovery)
        except ORT_REFUSALS as exc:  # onnxruntime would not run a graph with its intermediates exposed
            recovery.stopped = f"the per-node comparison could not run: {type(exc).__name__}: {exc}"
            break
        if not found:
            recovery.stopped = "no node left to keep in float adds error of its own"
            break
        retried = _quantized_without(config, kept + found, source, ctx, quantize)
        if retried is None:
            recovery.stopped = "the next attempt would leave nothing quantized (the float model is no quantization)"
            break
        result, kept = retried, kept + found
        assert result.path is not None
        attempt = _score(recovery, kept, result, source, reference, ctx)
        if (attempt.cosine_mean or -1.0) > (best.cosine_mean or -1.0):
            best = attempt
            shutil.copyfile(result.path, best_file)
    assert result.path is not None
    shutil.copyfile(best_file, result.path)
    best_file.unlink()
    ctx.sensitivity = recovery.section(best)
    return result


QUANTIZED_OPS = {
    "DynamicQuantizeLinear",
    "QuantizeLinear",
    "MatMulInteger",
    "ConvInteger",
    "DynamicQuantizeMatMul",
    "MatMulNBits",
    "GatherBlockQuantized",
}


def _quantized_without(
    config: Held, kept: list[str], source: ModelHandle, ctx: PassContext, quantize: Quantize
) -> ModelHandle | None:
    """The model quantized again with `kept` in float; None when that leaves nothing quantized."""
    try:
        result = quantize(config.model_copy(update={"nodes_to_exclude": kept}), source, ctx)
    except PassFailed as exc:
        if exc.code == JobErrorCode.nothing_to_quantize:  # int4 with every MatMul kept in float
            return None
        raise
    assert result.path is not None
    if not still_quantized(onnx.load(str(result.path)), config):
        return None
    if isinstance(config, Fp16):
        fold_round_trip_casts(result.path)
    return result


def still_quantized(model: onnx.ModelProto, config: Config) -> bool:
    """Whether any part of the model is still quantized: an int8 / int4 node, or a float16 weight or Cast."""
    if isinstance(config, Fp16):
        return any(i.data_type == TensorProto.FLOAT16 for i in model.graph.initializer) or any(
            n.op_type == "Cast" and _cast_to(n) == TensorProto.FLOAT16 for n in model.graph.node
        )
    return any(n.op_type in QUANTIZED_OPS or n.op_type.startswith("QLinear") for n in model.graph.node)


def quantizer_input(config: Config, source: Path, ctx: PassContext) -> Path:
    """The float graph the quantizer was given: int8 quantizes the pre-processed model when pre-processing
    applied (BatchNorm folded, MatMul + Add fused), fp16 the model itself."""
    preprocessed = ctx.path(PREPROCESSED)
    return preprocessed if isinstance(config, Dynamic | Static) and preprocessed.is_file() else source


def _floor(config: Held, ctx: PassContext) -> tuple[float, str]:
    """The spec's min_cosine (it is to the job's original; the search compares with the model this step was
    given, the same thing for a quantization-only pipeline), else the method's setting."""
    if ctx.min_cosine is not None:
        return ctx.min_cosine, "constraints.min_cosine"
    assert ctx.floors is not None
    value = config.fidelity_floor(ctx.floors)
    assert value is not None  # every quantization method has a floor
    kind = "FP16" if isinstance(config, Fp16) else "INT4" if isinstance(config, Int4) else "INT8"
    return value, f"setting FIDELITY_FLOOR_{kind}"


def _outputs(path: Path, handle: ModelHandle, batches: list[Feeds]) -> list[list[np.ndarray]]:
    session = onnx_session(path, threads=1)
    return [run(handle, batch, session) for batch in batches]


def _score(
    recovery: Recovery,
    kept: list[str],
    result: ModelHandle,
    source: ModelHandle,
    reference: list[list[np.ndarray]],
    ctx: PassContext,
) -> Attempt:
    """The result's mean cosine to the float model on the evaluation batches, recorded as the next attempt."""
    assert result.path is not None
    outputs = _outputs(result.path, source, ctx.evaluation)
    cosine = fidelity(source.output_names, reference, outputs, ctx.evaluation).get("cosine_mean")
    met = cosine is not None and bool(np.isfinite(cosine)) and cosine >= recovery.floor
    attempt = Attempt(len(recovery.attempts), list(kept), None if cosine is None else float(cosine), met)
    recovery.attempts.append(attempt)
    return attempt


def _more_nodes_in_float(
    config: Config, float_path: Path, quantized_path: Path, kept: list[str], ctx: PassContext, recovery: Recovery
) -> list[str]:
    """The nodes the next attempt adds to those in float: for fp16's first retry, every node out of float16's
    range; otherwise the one node with the largest error of its own."""
    batches = ctx.evaluation[:ATTRIBUTION_BATCHES]
    if isinstance(config, Fp16) and not any(k.reason == "fp16_range" for k in recovery.kept_in_float):
        found = [k for k in fp16_out_of_range(onnx.load(str(float_path)), batches) if k.node not in kept]
        if found:
            recovery.kept_in_float += found
            return [k.node for k in found]
    ranked = node_errors(onnx.load(str(float_path)), onnx.load(str(quantized_path)), batches, set(kept))
    if not ranked:
        return []
    worst = ranked[0]
    recovery.kept_in_float.append(worst)
    if isinstance(config, Dynamic) and worst.op_type == "Gemm":
        # dynamic quantization first splits a Gemm G into G_MatMul + G_Add, and matches the exclusions after
        return [worst.node, f"{worst.node}_MatMul"]
    return [worst.node]


def _float_tensors(model: onnx.ModelProto) -> dict[str, int]:
    """Every float node output of the graph with its element type (from shape inference)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {
        v.name: v.type.tensor_type.elem_type
        for v in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]
        if v.type.HasField("tensor_type")
    }
    floats = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16)
    return {o: types[o] for n in model.graph.node for o in n.output if types.get(o) in floats}


def intermediates(model: onnx.ModelProto, names: dict[str, int], batches: list[Feeds]) -> dict[str, list[np.ndarray]]:
    """The values of the tensors `names` (name -> element type) on each batch, in float64: the model is run
    with them as extra outputs. Batches may differ in shape (text padded per batch)."""
    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    present = {o.name for o in augmented.graph.output}
    augmented.graph.output.extend(
        helper.make_tensor_value_info(n, t, None) for n, t in names.items() if n not in present
    )
    session = onnx_session_of(augmented)
    wanted = list(names)
    inputs = {i.name for i in session.get_inputs()}
    found: dict[str, list[np.ndarray]] = {n: [] for n in wanted}
    for batch in batches:
        values = session.run(wanted, {k: v for k, v in batch.items() if k in inputs})
        for name, value in zip(wanted, values, strict=True):
            found[name].append(np.asarray(value, dtype=np.float64))
    return found


def onnx_session_of(model: onnx.ModelProto) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _relative_error(reference: list[np.ndarray], candidate: list[np.ndarray]) -> float:
    """||candidate - reference|| / ||reference|| over every batch; 0 where the shapes disagree (a tensor the
    quantized graph computes differently is not compared)."""
    if any(r.shape != c.shape for r, c in zip(reference, candidate, strict=True)):
        return 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        noise = sum(float(np.square(r - c).sum()) for r, c in zip(reference, candidate, strict=True))
        signal = sum(float(np.square(r).sum()) for r in reference)
        error = float(np.sqrt(noise) / (np.sqrt(signal) + 1e-12))
    return error if np.isfinite(error) else float("inf")


def node_errors(
    float_model: onnx.ModelProto, quantized: onnx.ModelProto, batches: list[Feeds], kept: set[str]
) -> list[Kept]:
    """Nodes of the float graph that quantization changed and that are not yet kept in float, worst first, by
    the error they add themselves: their outputs' relative error minus their inputs' worst. The error a node
    adds without having been changed (kept in float, or an op the method leaves alone, like a Sigmoid after
    int8) goes to the producers of its inputs: their quantized outputs feed it."""
    in_float = _float_tensors(float_model)
    in_quantized = _float_tensors(quantized)
    produced = {o for n in quantized.graph.node for o in n.output}
    # a contrib op (MatMulNBits, DynamicQuantizeMatMul) has no type inferred: int8 and int4 keep float32
    common = {n: in_quantized.get(n, t) for n, t in in_float.items() if n in produced}
    reference = intermediates(float_model, {n: in_float[n] for n in common}, batches)
    candidate = intermediates(quantized, common, batches)
    error = {n: _relative_error(reference[n], candidate[n]) for n in common}
    changed = _changed(float_model, quantized) - kept
    producer = {o: n for n in float_model.graph.node for o in n.output}
    own: dict[str, float] = {}
    for node in float_model.graph.node:
        outputs = [error[o] for o in node.output if o in error]
        if not outputs:
            continue
        added = max(outputs) - max((error.get(i, 0.0) for i in node.input), default=0.0)
        blamed = [node] if node.name in changed else [producer[i] for i in node.input if i in producer]
        for culprit in blamed:
            if culprit.name in changed:
                own[culprit.name] = max(own.get(culprit.name, 0.0), added)
    by_name = {n.name: n for n in float_model.graph.node}
    ranked = sorted((v, k) for k, v in own.items() if v > 0)[::-1]
    return [
        Kept(name, by_name[name].op_type, "sensitivity", f"adds relative error {value:.3g} to its outputs")
        for value, name in ranked
    ]


def _changed(float_model: onnx.ModelProto, quantized: onnx.ModelProto) -> set[str]:
    """Names of the float graph's nodes the quantization replaced (no node of that name, op, inputs and
    outputs is left) or converted (every node of an fp16 graph, whose tensors changed type)."""
    if any(i.data_type == TensorProto.FLOAT16 for i in quantized.graph.initializer):
        return {n.name for n in float_model.graph.node if n.name}
    left = {(n.name, n.op_type, tuple(n.input), tuple(n.output)) for n in quantized.graph.node}
    return {
        n.name
        for n in float_model.graph.node
        if n.name and (n.name, n.op_type, tuple(n.input), tuple(n.output)) not in left
    }


def fp16_out_of_range(model: onnx.ModelProto, batches: list[Feeds]) -> list[Kept]:
    """Nodes that must stay float32 in an fp16 model: those writing or reading an activation above 65504 on
    the evaluation batches, and those reading a weight beyond float16's range."""
    tensors = _float_tensors(model)
    values = intermediates(model, tensors, batches)
    peaks = {n: max((float(np.abs(b).max()) for b in v if b.size), default=0.0) for n, v in values.items()}
    overflow = {n: peak for n, peak in peaks.items() if peak > FP16_MAX}
    weights = {i.name: _weight_problem(numpy_helper.to_array(i)) for i in model.graph.initializer}
    found: dict[str, Kept] = {}
    for node in model.graph.node:
        if not node.name:
            continue
        touched = [t for t in [*node.input, *node.output] if t in overflow]
        bad_weights = [f"{t}: {weights[t]}" for t in node.input if weights.get(t)]
        if touched:
            found[node.name] = Kept(
                node.name,
                node.op_type,
                "fp16_range",
                "; ".join(f"{t} reaches {overflow[t]:.3g}, above float16's 65504" for t in touched),
            )
        elif bad_weights:
            found[node.name] = Kept(node.name, node.op_type, "fp16_range", "; ".join(bad_weights))
    return list(found.values())


def _weight_problem(array: np.ndarray) -> str | None:
    """Why a weight cannot be float16: values above 65504, or most nonzero values below 2^-24."""
    if not np.issubdtype(array.dtype, np.floating) or array.size == 0:
        return None
    magnitude = np.abs(array.astype(np.float64))
    if magnitude.max() > FP16_MAX:
        return f"weights up to {magnitude.max():.3g}, above float16's 65504"
    nonzero = magnitude[magnitude > 0]
    if nonzero.size and (nonzero < FP16_TINY).mean() > 0.5:
        return "most of its nonzero weights are below float16's smallest value 2^-24"
    return None


def fold_round_trip_casts(path: Path) -> None:
    """Remove float32 -> float16 -> float32 Cast pairs (what the converter puts between two nodes kept in
    float32): the value goes straight from one to the other, as it would in the float model."""
    model = onnx.load(str(path))
    graph = model.graph
    outputs = {o.name for o in graph.output}
    float32 = {n for n, t in _float_tensors(model).items() if t == TensorProto.FLOAT} | {
        i.name for i in graph.input if i.type.tensor_type.elem_type == TensorProto.FLOAT
    }
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    removed: list[onnx.NodeProto] = []
    for first in graph.node:
        readers = consumers.get(first.output[0], []) if first.op_type == "Cast" else []
        if not readers or _cast_to(first) != TensorProto.FLOAT16 or first.output[0] in outputs:
            continue
        if first.input[0] not in float32:  # from float64 the pair is a real conversion
            continue
        if not all(r.op_type == "Cast" and _cast_to(r) == TensorProto.FLOAT for r in readers):
            continue
        if any(r.output[0] in outputs for r in readers):
            continue
        for second in readers:
            for node in consumers.get(second.output[0], []):
                node.input[:] = [first.input[0] if i == second.output[0] else i for i in node.input]
        removed += [first, *readers]
    if not removed:
        return
    gone = {id(n) for n in removed}
    names = {o for n in removed for o in n.output}
    kept_nodes = [n for n in graph.node if id(n) not in gone]
    del graph.node[:]
    graph.node.extend(kept_nodes)
    kept_info = [v for v in graph.value_info if v.name not in names]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)
    onnx.save(model, str(path))


def _cast_to(node: onnx.NodeProto) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None)
