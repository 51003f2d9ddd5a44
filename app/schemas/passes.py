"""Every pass's config: validated in the API at submit, executed by workers.passes.<type> in the worker.

Each config names its `type`; `PassConfig` is the discriminated union of all of them, built from
PASS_CONFIGS, so adding a pass means adding its config here and its run in workers/passes/.
"""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

STORED = "stored"
"""Validation context flag for a spec read back from the database: it repeats every field, defaults
included, so only the checks on values apply, not the ones on which fields the client set."""


class _PassBase(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConvertConfig(_PassBase):
    """PyTorch / Hugging Face -> ONNX export, or an ONNX opset change."""

    type: Literal["convert"]
    to: Literal["onnx"] = "onnx"
    opset: int | None = Field(None, ge=11, le=23, description="target ONNX opset; default: an ONNX model keeps "
                              "its own, a torch model gets the exporter's default (18)")


class OptimizeConfig(_PassBase):
    """onnxruntime offline graph optimization, saved as a new ONNX model."""

    type: Literal["optimize"]
    level: Literal["basic", "extended"] = Field(
        "extended", description="basic: constant folding and redundant-node removal; extended: + fusions")


class CalibrationConfig(_PassBase):
    """Where static quantization reads the activation ranges from."""

    dataset_id: str = Field(description="a dataset of the model's inputs (POST /v1/datasets)")
    samples: int = Field(128, ge=1, le=100_000, description="the first N samples of the dataset are run")
    method: Literal["minmax", "entropy", "percentile"] = Field(
        "minmax", description="minmax: observed range; entropy: KL-optimal clipping; percentile: clip at the "
                              "99.999th percentile")


_ONLY = {
    "weight_type": {"dynamic", "static"}, "per_channel": {"dynamic", "static"},
    "op_types": {"dynamic", "static"}, "calibration": {"static"}, "block_size": {"int4"},
    "symmetric": {"int4"}, "accuracy_level": {"int4"}, "embeddings": {"int4"},
}
"""The methods each method-specific field applies to."""


class QuantizeConfig(_PassBase):
    """Post-training quantization with onnxruntime.quantization."""

    type: Literal["quantize"]
    method: Literal["dynamic", "static", "int4", "fp16"] = Field(
        description="dynamic: int8 weights, activations quantized at run time; static: int8 weights and "
                    "activations (QDQ), ranges calibrated on a dataset; int4: 4-bit weight-only MatMul (and "
                    "embedding Gather) in blocks; fp16: half-precision weights")
    weight_type: Literal["int8", "uint8"] = "int8"
    per_channel: bool = Field(
        True, description="one scale per output channel: same size, much closer outputs (MiniLM cosine 0.991 "
                          "vs 0.966 per tensor)")
    op_types: list[str] | None = Field(None, description="restrict to these op types (dynamic, static)")
    nodes_to_exclude: list[str] = Field(default_factory=list, description="node names left in float")
    calibration: CalibrationConfig | None = Field(None, description="required by static")
    block_size: int = Field(32, ge=16, le=256, description="int4: weights per scale, a power of two")
    symmetric: bool = Field(False, description="int4: symmetric blocks drop the zero points (MiniLM: 2% "
                                               "smaller, cosine 0.960 vs 0.971 on random token ids)")
    accuracy_level: Literal[0, 1, 2, 3, 4] | None = Field(
        None, description="int4: MatMulNBits compute type (0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8)")
    embeddings: bool = Field(True, description="int4: also quantize embedding tables (Gather -> "
                                               "GatherBlockQuantized); often half a text model's weights")

    @model_validator(mode="after")
    def _method_params(self, info: ValidationInfo) -> "QuantizeConfig":
        foreign = sorted(k for k in self.model_fields_set if k in _ONLY and self.method not in _ONLY[k])
        if foreign and not (info.context or {}).get(STORED):
            raise ValueError(f"{', '.join(foreign)} do not apply to method {self.method!r} ("
                             + "; ".join(f"{k}: {'/'.join(sorted(_ONLY[k]))} only" for k in foreign) + ")")
        if self.method == "static" and self.calibration is None:
            raise ValueError("method 'static' needs calibration data: add \"calibration\": {\"dataset_id\": "
                             "\"ds_...\", \"samples\": 128, \"method\": \"minmax\"}")
        if self.block_size & (self.block_size - 1):
            raise ValueError(f"block_size {self.block_size} is not a power of two (16, 32, 64, 128 or 256)")
        return self


PASS_CONFIGS = (ConvertConfig, OptimizeConfig, QuantizeConfig)
PassConfig = Annotated[ConvertConfig | OptimizeConfig | QuantizeConfig, Field(discriminator="type")]
