"""quantize: post-training quantization. Each method is its own type with only its own settings:
onnxruntime.quantization on ONNX (dynamic, static, int4 by rtn or hqq, int8_blocks, fp16), half precision
on PyTorch for GPUs (fp16 with `representation: torch`, bf16)."""

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from passes.base import FidelityFloors, Part, PassConfig, Takes


class Calibration(Part):
    """Where static quantization reads the activation ranges from."""

    dataset_id: str = Field(description="a dataset of the model's inputs (POST /v1/datasets)")
    samples: int = Field(128, ge=1, le=100_000, description="the first N samples of the dataset are run")
    method: Literal["minmax", "entropy", "percentile"] = Field(
        "minmax",
        description="minmax: observed range; entropy: KL-optimal clipping; percentile: clip at the 99.999th percentile",
    )


class _Quantize(PassConfig):
    type: Literal["quantize"]

    def takes(self) -> Takes:
        return "onnx"


class _Int8(_Quantize):
    weight_type: Literal["int8", "uint8"] = "int8"
    per_channel: bool = Field(
        True,
        description="one scale per output channel: same size, much closer outputs (MiniLM cosine 0.991 vs 0.966 "
        "per tensor)",
    )
    op_types: list[str] | None = Field(None, description="restrict to these op types")
    nodes_to_exclude: list[str] = Field(default_factory=list, description="node names left in float")

    def fidelity_floor(self, floors: FidelityFloors) -> float | None:
        return floors.int8


class Dynamic(_Int8):
    """int8 weights, activations quantized at run time."""

    method: Literal["dynamic"]


class Static(_Int8):
    """int8 weights and activations (QDQ), activation ranges calibrated on a dataset."""

    method: Literal["static"]
    calibration: Calibration = Field(
        description='the calibration data, e.g. {"dataset_id": "ds_...", "samples": 128, "method": "minmax"}'
    )

    @model_validator(mode="before")
    @classmethod
    def _calibration_given(cls, data: Any) -> Any:
        if isinstance(data, dict) and "calibration" not in data:
            raise ValueError(
                'method \'static\' needs calibration data: add "calibration": {"dataset_id": "ds_...", "samples": '
                '128, "method": "minmax"}'
            )
        return data


class _Blocks(_Quantize):
    """Weight-only MatMul in blocks (MatMulNBits): activations stay float, each block of `block_size` weights
    along the input has its own scale (and zero point)."""

    block_size: int = Field(32, ge=16, le=256, description="weights per scale, a power of two")
    symmetric: bool = Field(
        False, description="symmetric blocks drop the zero points (MiniLM: 2% smaller, cosine 0.960 vs 0.971)"
    )
    accuracy_level: Literal[0, 1, 2, 3, 4] | None = Field(
        None, description="MatMulNBits compute type (0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8)"
    )
    nodes_to_exclude: list[str] = Field(default_factory=list, description="node names left in float")

    @field_validator("block_size")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError(f"block_size {value} is not a power of two (16, 32, 64, 128 or 256)")
        return value


class Int4(_Blocks):
    """4-bit weight-only MatMul (MatMulNBits) and embedding Gather (GatherBlockQuantized), in blocks. The
    MatMul weights are rounded by `algorithm`: rtn (round to nearest) or hqq (half-quadratic, no data), both
    onnxruntime.quantization's. (Its bundled GPTQ is not offered: on the test Llama it gave round-to-nearest's
    exact weights.)"""

    method: Literal["int4"]
    algorithm: Literal["rtn", "hqq"] = Field(
        "rtn",
        description="rtn: round each block to nearest; hqq: fit scales and zeros by half-quadratic optimisation "
        "(no data; closer to the original, slower on onnxruntime's CPU kernel)",
    )
    embeddings: bool = Field(
        True,
        description="also quantize embedding tables (Gather -> GatherBlockQuantized, round to nearest); often "
        "half a text model's weights",
    )

    def fidelity_floor(self, floors: FidelityFloors) -> float | None:
        return floors.int4


class Int8Blocks(_Blocks):
    """8-bit weight-only MatMul (MatMulNBits, bits 8), rounded to nearest per block: for an LLM, half the
    weight memory of fp16 and near-lossless."""

    method: Literal["int8_blocks"]

    def fidelity_floor(self, floors: FidelityFloors) -> float | None:
        return floors.int8


class _TorchHalf(_Quantize):
    """Half precision on PyTorch: float32 in and out, delivered as a PyTorch artifact."""

    def pipeline_problem(self, later: Sequence[PassConfig]) -> str | None:
        if any(c.artifact_format() in ("pt2", "torchscript") for c in later):
            return None
        return (
            f"a {getattr(self, 'method', '')} PyTorch model is delivered as a PyTorch artifact: add "
            '{"type": "convert", "to": "pt2"} (or "torchscript") after it'
        )


class Fp16(_TorchHalf):
    """Half-precision weights and compute: the ONNX graph (default) or the PyTorch module, inputs and outputs
    float32 either way."""

    method: Literal["fp16"]
    representation: Literal["onnx", "torch"] = Field(
        "onnx", description="onnx: convert the ONNX graph; torch: the PyTorch module (end with a convert to pt2)"
    )
    nodes_to_exclude: list[str] = Field(default_factory=list, description="onnx: node names left in float32")

    def takes(self) -> Takes:
        return self.representation

    def fidelity_floor(self, floors: FidelityFloors) -> float | None:
        return floors.fp16

    def pipeline_problem(self, later: Sequence[PassConfig]) -> str | None:
        return super().pipeline_problem(later) if self.representation == "torch" else None


class Bf16(_TorchHalf):
    """bfloat16 weights and compute on PyTorch, for GPUs (onnxruntime has few bfloat16 CPU kernels)."""

    method: Literal["bf16"]
    representation: Literal["torch"] = Field("torch", description="bf16 runs on PyTorch only")

    def takes(self) -> Takes:
        return "torch"

    def fidelity_floor(self, floors: FidelityFloors) -> float | None:
        return floors.fp16


Config = Annotated[Dynamic | Static | Int4 | Int8Blocks | Fp16 | Bf16, Field(discriminator="method")]
