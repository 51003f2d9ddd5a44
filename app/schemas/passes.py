"""Every pass's config: validated in the API at submit, executed by workers.passes.<type> in the worker.

Each config names its `type`; `PassConfig` is the discriminated union of all of them, built from
PASS_CONFIGS, so adding a pass means adding its config here and its run in workers/passes/.
"""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


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


class QuantizeConfig(_PassBase):
    """Post-training quantization with onnxruntime.quantization."""

    type: Literal["quantize"]
    method: Literal["dynamic", "fp16"] = Field(
        description="dynamic: int8 weights, activations quantized at run time; fp16: half-precision weights")
    weight_type: Literal["int8", "uint8"] = "int8"
    per_channel: bool = Field(
        True, description="one scale per output channel: same size, much closer outputs (MiniLM cosine 0.991 "
                          "vs 0.966 per tensor)")
    op_types: list[str] | None = Field(None, description="restrict to these op types (dynamic only)")
    nodes_to_exclude: list[str] = Field(default_factory=list, description="node names left in float")

    @model_validator(mode="after")
    def _method_params(self) -> "QuantizeConfig":
        dynamic_only = {"weight_type", "per_channel", "op_types"} & self.model_fields_set
        if self.method == "fp16" and dynamic_only:
            raise ValueError(f"{', '.join(sorted(dynamic_only))} apply to method 'dynamic' only, not 'fp16'")
        return self


PASS_CONFIGS = (ConvertConfig, OptimizeConfig, QuantizeConfig)
PassConfig = Annotated[ConvertConfig | OptimizeConfig | QuantizeConfig, Field(discriminator="type")]
