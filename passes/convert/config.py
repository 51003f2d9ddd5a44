"""convert: move the model to another form. The last explicit convert decides the job's artifact format."""

from collections.abc import Sequence
from typing import Literal

from pydantic import Field, model_validator

from passes.base import ArtifactFormat, CalibrationSet, FidelityFloors, Format, PassConfig, Takes

DEPLOYMENT_FORMATS = ("openvino", "tflite")
"""formats no pass works on: a convert to one of them ends the pipeline"""


class Convert(PassConfig):
    """ONNX (export, or an opset change), torch (from ONNX, so PyTorch passes apply), a torch artifact
    (`pt2`: a torch.export ExportedProgram; `torchscript`), or a deployment format made from the pipeline's
    ONNX: `openvino` (OpenVINO IR, the .xml and .bin in one zip) or `tflite` (through onnx2tf and the
    TensorFlow Lite converter; image inputs become channels-last, NHWC). The job's artifact is ONNX when no
    convert names another format."""

    type: Literal["convert"]
    to: Literal["onnx", "torch", "pt2", "torchscript", "openvino", "tflite"] = "onnx"
    opset: int | None = Field(
        None,
        ge=11,
        le=23,
        description="target ONNX opset; default: an ONNX model keeps its own, a torch model gets the exporter's "
        "default (18)",
    )
    precision: Literal["float32", "float16", "int8"] | None = Field(
        None,
        description="`to: openvino` or `tflite` (default float32): float16 weights (OpenVINO's compress_to_fp16), "
        "or for tflite int8 weights and activations calibrated on `calibration` (float32 inputs and outputs "
        "either way)",
    )
    calibration: CalibrationSet | None = Field(
        None,
        description='`to: tflite` with `precision: int8`: the representative dataset, e.g. {"dataset_id": '
        '"ds_...", "samples": 128}',
    )
    aoti: bool | None = Field(
        None,
        description="`to: pt2`: also compile the program ahead of time with AOTInductor into model.aoti.pt2, a "
        "package of kernels for this worker's device (its GPU on a cuda job, else the CPU) that a server loads "
        "with torch._inductor.aoti_load_package and runs with no model code and no compilation; default: on for "
        "a `device: cuda` job (the job still succeeds, with the reason in the report, where the compiler "
        "cannot take the model), off on the CPU (its C++ compile takes a minute); true: the job fails if it "
        "cannot",
    )
    converts = True

    @model_validator(mode="after")
    def _settings_for_target(self) -> "Convert":
        if self.aoti is not None and self.to != "pt2":
            raise ValueError(f"aoti applies to `to: pt2` only, not {self.to!r}")
        if self.opset is not None and self.to != "onnx":
            raise ValueError(f"opset applies to `to: onnx` only, not {self.to!r}")
        if self.precision is not None and self.to not in DEPLOYMENT_FORMATS:
            raise ValueError(f"precision applies to `to: openvino` or `tflite` only, not {self.to!r}")
        if self.precision == "int8" and self.to == "openvino":
            raise ValueError(
                'an int8 OpenVINO IR comes from NNCF: put {"type": "quantize", "method": "nncf", "calibration": '
                '{"dataset_id": "ds_..."}} before the convert to openvino'
            )
        if self.calibration is not None and self.precision != "int8":
            raise ValueError("calibration applies to `to: tflite` with `precision: int8` only")
        if self.precision == "int8" and self.calibration is None:
            raise ValueError(
                'tflite int8 needs a representative dataset: add "calibration": {"dataset_id": "ds_...", '
                '"samples": 128}'
            )
        return self

    def takes(self) -> Takes:
        return "onnx" if self.to in DEPLOYMENT_FORMATS else "any"

    def gives(self, given: Format) -> Format:
        if self.to == "torch":
            return "torch" if given == "onnx" else given  # a torch model stays as it is
        return self.to

    def artifact_format(self) -> ArtifactFormat | None:
        return None if self.to == "torch" else self.to

    def label(self) -> str:
        if self.to not in DEPLOYMENT_FORMATS:
            return "convert"
        return f"convert {self.to}" + (f" {self.precision}" if self.precision else "")

    def checks_conversion(self) -> bool:
        return self.precision != "int8"

    def fidelity_floor(self, floors: FidelityFloors) -> float | None:
        return floors.int8 if self.precision == "int8" else None

    def pipeline_problem(self, later: Sequence[PassConfig]) -> str | None:
        if self.to in DEPLOYMENT_FORMATS and later:
            return (
                f"no pass works on a {self.to} model: make the convert to {self.to} the last pass (quantize "
                "or prune before it)"
            )
        return None


Config = Convert
