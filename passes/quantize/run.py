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
from dataclasses import replace
from pathlib import Path
from typing import Any

import onnx
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
from onnxruntime.quantization.shape_inference import quant_pre_process
from onnxruntime.transformers.float16 import convert_float_to_float16

from app.schemas.errors import JobErrorCode
from passes.quantize.config import Bf16, Config, Dynamic, Fp16, Int4, Static
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
        model = convert_float_to_float16(
            onnx.load(str(handle.path)), keep_io_types=True, node_block_list=config.nodes_to_exclude or None
        )
        onnx.save(model, str(path))
    elif isinstance(config, Int4):
        int4(config, handle.path, path)
    elif isinstance(config, Static):
        static(config, preprocessed(handle.path, ctx), path, handle, ctx)
    elif isinstance(config, Dynamic):
        quantize_dynamic(
            str(preprocessed(handle.path, ctx)),
            str(path),
            weight_type=_weight_type(config),
            per_channel=config.per_channel,
            op_types_to_quantize=config.op_types,
            nodes_to_exclude=config.nodes_to_exclude,
        )
    _drop_debug_metadata(path)
    return handle.with_onnx(path)


def half_precision_module(config: Config, handle: ModelHandle, ctx: PassContext) -> ModelHandle:
    dtype = torch.bfloat16 if isinstance(config, Bf16) else torch.float16
    ctx.metrics["dtype"] = str(dtype).removeprefix("torch.")
    return replace(handle, module=ReducedPrecision(handle.module, dtype), path=None)


def _weight_type(config: Dynamic | Static) -> QuantType:
    return QuantType.QInt8 if config.weight_type == "int8" else QuantType.QUInt8


def preprocessed(source: Path, ctx: PassContext) -> Path:
    """ORT's recommended pre-processing (shape inference, cleanup, BatchNorm folding), or the model as it
    is when it does not apply."""
    target = ctx.path(PREPROCESSED)
    try:
        quant_pre_process(str(source), str(target), skip_symbolic_shape=True)
    except Exception as exc:  # pre-processing is an optimisation; quantize the model as it is
        log.warning("quantization pre-processing skipped: %s", exc)
        return source
    return target


def static(config: Static, source: Path, path: Path, handle: ModelHandle, ctx: PassContext) -> None:
    calibration = config.calibration
    data = ctx.datasets[calibration.dataset_id]
    batch_size = len(next(iter(ctx.example.values())))
    feeds = [f for f, _ in batches(data, handle.input_names, batch_size, calibration.samples)]
    if batch_size > 1 and len(feeds) > 1 and len(next(iter(feeds[-1].values()))) != batch_size:
        feeds.pop()  # a short last batch would not fit a fixed batch size; the ranges do not need it
    extra: dict[str, Any] = {"CalibMovingAverage": False}
    if calibration.method == "percentile":
        extra["CalibPercentile"] = 99.999
    try:
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
    except ValueError as exc:
        raise PassFailed(
            JobErrorCode.quantization_failed,
            f"onnxruntime's static quantization refused the model or its calibration data ({exc}); check that "
            "the dataset holds the model's inputs, or use method 'dynamic'",
        ) from exc


def int4(config: Int4, source: Path, path: Path) -> None:
    op_types = ("MatMul", "Gather") if config.embeddings else ("MatMul",)
    quantizer = MatMulNBitsQuantizer(
        onnx.load(str(source)),
        bits=4,
        block_size=config.block_size,
        is_symmetric=config.symmetric,
        accuracy_level=config.accuracy_level,
        nodes_to_exclude=config.nodes_to_exclude,
        op_types_to_quantize=op_types,
        quant_axes=(("MatMul", 0), ("Gather", 1)),
    )
    quantizer.process()
    quantized = quantizer.model.model
    if not any(n.op_type in ("MatMulNBits", "GatherBlockQuantized") for n in quantized.graph.node):
        raise PassFailed(
            JobErrorCode.nothing_to_quantize,
            "int4 found no MatMul with a constant weight (nor embedding Gather) whose size fits the block size; "
            "use method 'dynamic'",
        )
    onnx.save(quantized, str(path))


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
