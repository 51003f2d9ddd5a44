"""quantize: post-training quantization with onnxruntime.quantization.

dynamic: int8 weights (MatMul, Gemm, Gather, Conv...), activations quantized at run time. static: int8
weights and uint8 activations as QDQ, activation ranges calibrated by running a dataset. Both after ORT's
recommended pre-processing (shape inference and graph cleanup, BatchNorm folded into Conv). int4: weight-only
4-bit blocks, MatMul -> MatMulNBits and embedding Gather -> GatherBlockQuantized. fp16: weights and compute
in half precision, inputs and outputs kept float32 so callers need not change. fp16/bf16 on PyTorch: the
module in half precision behind float32 inputs and outputs, for GPU deployment as .pt2 or TorchScript.

ORT's helpers write their temporary models into tempfile's folder; the child runs with cwd and TMPDIR inside
the job's workdir, so nothing lands in the repository or outlives the job.
"""

import contextlib
import logging
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import onnx
import torch
from onnx import version_converter
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.matmul_nbits_quantizer import (
    HQQWeightOnlyQuantConfig,
    MatMulNBitsQuantizer,
    WeightOnlyQuantConfig,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
from onnxruntime.transformers.onnx_model import OnnxModel

from app.schemas.errors import JobErrorCode
from passes.quantize.config import Bf16, Config, Dynamic, Fp16, Int4, Int8Blocks, Static
from passes.quantize.sensitivity import PREPROCESSED, within_floor
from workers.context import PassContext
from workers.datasets import batches
from workers.runtime import Feeds, ModelHandle, PassFailed

log = logging.getLogger(__name__)
CALIBRATION = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
LOAD_PROBE = "import sys, onnxruntime; onnxruntime.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])"
LOAD_TIMEOUT_S = 300
ANY_GRAPH_HINT = "exclude the node it names with nodes_to_exclude, restrict op_types, or try "
UNTYPED_AS_FLOAT = {"DefaultTensorType": onnx.TensorProto.FLOAT}
"""a weight whose type shape inference could not give (behind a fused contrib operator) is float32: all
a quantizer is handed is float models"""
FP16_FALLBACK = ("Transpose",)
INT4_OPSET, INT4_IR = 21, 10
"""int4 tensors exist from opset 21 and IR version 10 on"""


class DatasetReader(CalibrationDataReader):
    """Feeds the calibration samples to ORT's calibrator in batches the model accepts."""

    def __init__(self, feeds: list[Feeds]) -> None:
        self.feeds = iter(feeds)

    def get_next(self) -> Feeds | None:
        return next(self.feeds, None)


class ReducedPrecision(torch.nn.Module):
    """A module computing in fp16 or bf16 whose float inputs and outputs stay float32, so callers (and the
    evaluation) feed it exactly what they fed the original."""

    def __init__(self, module: torch.nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.module = module.to(dtype)
        self.dtype = dtype

    def train(self, mode: bool = True) -> "ReducedPrecision":
        self.training = mode
        with contextlib.suppress(NotImplementedError):  # a module from torch.export keeps its exported mode
            self.module.train(mode)
        return self

    def forward(self, *inputs: torch.Tensor) -> Any:
        result = self.module(*[x.to(self.dtype) if x.is_floating_point() else x for x in inputs])
        if isinstance(result, list | tuple):
            return type(result)(r.float() if r.is_floating_point() else r for r in result)
        return result.float() if result.is_floating_point() else result


def run(config: Config, handle: ModelHandle, ctx: PassContext) -> ModelHandle:
    return within_floor(config, handle, ctx, quantized)


def quantized(config: Config, handle: ModelHandle, ctx: PassContext) -> ModelHandle:
    if config.takes() == "torch":
        return half_precision_module(config, handle, ctx)
    assert handle.path is not None  # the plan hands an ONNX pass an ONNX file
    path = ctx.path("model.onnx")
    if isinstance(config, Fp16):
        fp16(config, handle.path, path, ctx)  # checks its own output: it retries with Transposes in float32
        return handle.with_onnx(path)
    if isinstance(config, Int4):
        int4(config, handle.path, path)
    elif isinstance(config, Int8Blocks):
        int8_blocks(config, handle.path, path)
    elif isinstance(config, Static):
        static(config, preprocessed(handle.path, ctx), path, handle, ctx)
    elif isinstance(config, Dynamic):
        dynamic(config, preprocessed(handle.path, ctx), path)
    _drop_debug_metadata(path)
    check_loads(path, config.label())
    return handle.with_onnx(path)


def half_precision_module(config: Config, handle: ModelHandle, ctx: PassContext) -> ModelHandle:
    dtype = torch.bfloat16 if isinstance(config, Bf16) else torch.float16
    ctx.metrics["dtype"] = str(dtype).removeprefix("torch.")
    return replace(handle, module=ReducedPrecision(handle.module, dtype), path=None)


def _weight_type(config: Dynamic | Static) -> QuantType:
    return QuantType.QInt8 if config.weight_type == "int8" else QuantType.QUInt8


def preprocessed(source: Path, ctx: PassContext) -> Path:
    """ORT's recommended pre-processing (cleanup, BatchNorm folding, shape inference: symbolic first, which
    types the contrib operators `optimize` fuses into, else onnx's), or the model as it is when neither
    applies."""
    target = ctx.path(PREPROCESSED)
    for symbolic in (True, False):
        try:
            quant_pre_process(str(source), str(target), skip_symbolic_shape=not symbolic, auto_merge=True)
        except Exception as exc:  # pre-processing is an optimisation; quantize the model as it is
            log.warning("quantization pre-processing (symbolic shapes: %s) skipped: %s", symbolic, exc)
            continue
        return target
    return source


def static(config: Static, source: Path, path: Path, handle: ModelHandle, ctx: PassContext) -> None:
    calibration = config.calibration
    data = ctx.datasets[calibration.dataset_id]
    batch_size = len(next(iter(ctx.example.values())))
    feeds = [f for f, _ in batches(data, handle.input_names, batch_size, calibration.samples)]
    if batch_size > 1 and len(feeds) > 1 and len(next(iter(feeds[-1].values()))) != batch_size:
        feeds.pop()  # a short last batch would not fit a fixed batch size; the ranges do not need it
    extra: dict[str, Any] = {**UNTYPED_AS_FLOAT, "CalibMovingAverage": False}
    if calibration.method == "percentile":
        extra["CalibPercentile"] = 99.999
    with library_refusal("static int8", "check that the calibration dataset holds the model's inputs, or try "):
        quantize_static(
            str(source),
            str(path),
            DatasetReader(feeds),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=config.op_types,
            per_channel=config.per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=_weight_type(config),
            nodes_to_exclude=config.nodes_to_exclude,
            calibrate_method=CALIBRATION[calibration.method],
            extra_options=extra,
        )


def fp16(config: Fp16, source: Path, target: Path, ctx: PassContext) -> None:
    """Weights and compute in half precision, inputs and outputs kept float32. A graph onnxruntime cannot
    load is written again with its Transposes in float32 (onnxruntime 1.32 crashes at its default
    optimisation level on some float16 Transpose chains, a GRU recogniser's), then refused if it still
    cannot; the report's step says which operator types stayed float32."""
    write_fp16(config, source, target, DEFAULT_OP_BLOCK_LIST)
    failure = load_failure(target)
    if failure is not None:
        log.warning("fp16 graph does not load (%s); keeping %s in float32", failure, FP16_FALLBACK)
        write_fp16(config, source, target, [*DEFAULT_OP_BLOCK_LIST, *FP16_FALLBACK])
        ctx.metrics["fp16_float32_op_types"] = list(FP16_FALLBACK)
        check_loads(target, config.label())


def write_fp16(config: Fp16, source: Path, target: Path, op_block_list: list[str]) -> None:
    model = OnnxModel(
        convert_float_to_float16(
            onnx.load(str(source)),
            keep_io_types=True,
            op_block_list=op_block_list,
            node_block_list=config.nodes_to_exclude or None,
        )
    )
    model.topological_sort()  # the converter appends its output Casts after the nodes that feed them
    model.save_model_to_file(str(target))
    _drop_debug_metadata(target)


def dynamic(config: Dynamic, source: Path, target: Path) -> None:
    """int8 weights, activations quantized at run time."""
    with library_refusal("dynamic int8"):
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=_weight_type(config),
            per_channel=config.per_channel,
            op_types_to_quantize=config.op_types,
            nodes_to_exclude=config.nodes_to_exclude,
            extra_options=UNTYPED_AS_FLOAT,
        )


def int4(config: Int4, source: Path, target: Path) -> None:
    """4-bit blocks for MatMul (and embedding Gather) weights, on the model brought to opset 21 first: the
    int4 type needs it, and the quantizer only relabels the opset, which leaves older operators invalid.
    hqq rounds the MatMul weights; the embedding tables are then rounded to nearest."""
    model = at_opset(onnx.load(str(source)), INT4_OPSET)
    with library_refusal(f"int4 {config.algorithm}"):
        if config.algorithm == "rtn":
            model = matmul_nbits(config, model, 4, ("MatMul", "Gather") if config.embeddings else ("MatMul",))
        else:
            model = matmul_nbits(config, model, 4, ("MatMul",), hqq(config))
            if config.embeddings:
                model = matmul_nbits(config, model, 4, ("Gather",))
    if not any(n.op_type in ("MatMulNBits", "GatherBlockQuantized") for n in model.graph.node):
        raise PassFailed(
            JobErrorCode.nothing_to_quantize,
            "int4 found no MatMul with a constant weight (nor embedding Gather) whose size fits the block size "
            "(a Gemm is not a MatMul); use method 'dynamic'",
        )
    onnx.save(model, str(target))


def int8_blocks(config: Int8Blocks, source: Path, target: Path) -> None:
    """8-bit blocks for MatMul weights (MatMulNBits bits 8), rounded to nearest."""
    with library_refusal("int8_blocks"):
        model = matmul_nbits(config, onnx.load(str(source)), 8, ("MatMul",))
    if not any(n.op_type == "MatMulNBits" for n in model.graph.node):
        raise PassFailed(
            JobErrorCode.nothing_to_quantize,
            "int8_blocks found no MatMul with a constant weight whose size fits the block size (a Gemm is not a "
            "MatMul); use method 'dynamic'",
        )
    onnx.save(model, str(target))


def matmul_nbits(
    config: Int4 | Int8Blocks,
    model: onnx.ModelProto,
    bits: int,
    op_types: tuple[str, ...],
    algorithm: WeightOnlyQuantConfig | None = None,
) -> onnx.ModelProto:
    """onnxruntime's MatMulNBits quantizer over `op_types`, by `algorithm` (round to nearest when None)."""
    quantizer = MatMulNBitsQuantizer(
        model,
        bits=bits,
        block_size=config.block_size,
        is_symmetric=config.symmetric,
        accuracy_level=config.accuracy_level,
        nodes_to_exclude=config.nodes_to_exclude,
        op_types_to_quantize=op_types,
        quant_axes=(("MatMul", 0), ("Gather", 1)),
        algo_config=algorithm,
    )
    quantizer.process()
    return quantizer.model.model


def hqq(config: Int4) -> WeightOnlyQuantConfig:
    return HQQWeightOnlyQuantConfig(block_size=config.block_size, bits=4, op_types_to_quantize=("MatMul",))


def at_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """The model converted to `opset` (default domain) with onnx's version converter, when it is below it."""
    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), opset)
    if current >= opset:
        return model
    try:
        converted = version_converter.convert_version(model, opset)
    except Exception as exc:  # the converter raises bare RuntimeErrors for an operator it has no adapter for
        raise PassFailed(
            JobErrorCode.quantization_failed,
            f"int4 needs opset {opset} and onnx's version converter cannot bring this opset-{current} model "
            f"there ({str(exc)[:300]}); use method 'dynamic', or export the model at opset {opset}",
        ) from exc
    converted.ir_version = max(converted.ir_version, INT4_IR)
    return converted


@contextlib.contextmanager
def library_refusal(method: str, hint: str = ANY_GRAPH_HINT) -> Iterator[None]:
    """onnxruntime.quantization raising on a graph it cannot handle (an untyped tensor, an operator it does
    not know) becomes a quantization_failed that names the method and says what to try instead."""
    try:
        yield
    except (ValueError, RuntimeError, KeyError, TypeError, AssertionError) as exc:
        raise PassFailed(
            JobErrorCode.quantization_failed,
            f"onnxruntime's {method} quantization could not handle this graph ({type(exc).__name__}: "
            f"{str(exc)[:300]}); {hint}another method",
        ) from exc


def load_failure(path: Path) -> str | None:
    """Why onnxruntime cannot load the model with default session options, as a user loads it, or None when
    it can. Loaded in a process of its own, because onnxruntime can crash on an invalid graph instead of
    raising."""
    probe = subprocess.run(
        [sys.executable, "-c", LOAD_PROBE, str(path)], capture_output=True, text=True, timeout=LOAD_TIMEOUT_S
    )
    if probe.returncode == 0:
        return None
    said = probe.stderr.strip().splitlines()[-1:] or [f"the loader died with signal {-probe.returncode}"]
    return said[0][:400]


def check_loads(path: Path, label: str) -> None:
    """A quantizer never hands on a graph the user cannot run."""
    failure = load_failure(path)
    if failure is not None:
        raise PassFailed(
            JobErrorCode.quantization_failed,
            f"{label} wrote a graph onnxruntime cannot load ({failure}); keep the nodes it names (or the "
            "operators onnxruntime lacks a kernel for) in float with nodes_to_exclude, or try another method",
        )


def _drop_debug_metadata(path: Path) -> None:
    """Remove what exporters attach to each node for debugging (torch's stack traces, fx node names, rewrite
    rule names): nothing reads it at run time, and in a small quantized model it is several percent of the
    file."""
    model = onnx.load(str(path))
    nodes = [n for n in model.graph.node if len(n.metadata_props) or n.doc_string]
    if not nodes:
        return
    for node in nodes:
        del node.metadata_props[:]
        node.doc_string = ""
    onnx.save(model, str(path))
