"""quantize nncf: static int8 with NNCF's post-training quantization (its ONNX backend) on a calibration
dataset: int8 weights and activations as QDQ, with NNCF's own range estimation and fast bias correction. The
result is ONNX, so it runs beside onnxruntime's static int8 in one search, and a convert to `openvino` after
it delivers the int8 OpenVINO IR."""

from typing import Literal

from pydantic import Field

from passes.base import CalibrationSet, FidelityFloors, PassConfig, Takes


class Nncf(PassConfig):
    """int8 weights and activations, ranges calibrated by NNCF (nncf.quantize) on the calibration samples."""

    type: Literal["quantize"]
    method: Literal["nncf"]
    calibration: CalibrationSet = Field(
        description='the calibration data, e.g. {"dataset_id": "ds_...", "samples": 300} (NNCF\'s subset_size)'
    )
    preset: Literal["performance", "mixed"] = Field(
        "performance",
        description="performance: symmetric weights and activations; mixed: asymmetric activations (closer for "
        "activations that are not centred on zero, such as after GELU)",
    )
    model_type: Literal["transformer"] | None = Field(
        None, description="transformer: NNCF's patterns for attention blocks (keeps sensitive ops in float)"
    )
    fast_bias_correction: bool = Field(True, description="NNCF's fast bias correction after quantizing")
    nodes_to_exclude: list[str] = Field(
        default_factory=list, description="node names left in float (NNCF's ignored_scope)"
    )

    def takes(self) -> Takes:
        return "onnx"

    def fidelity_floor(self, floors: FidelityFloors) -> float | None:
        return floors.int8


Config = Nncf
