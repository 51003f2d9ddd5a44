"""convert: move the model to another form. The last explicit convert decides the job's artifact format."""

from typing import Literal

from pydantic import Field, model_validator

from passes.base import ArtifactFormat, Format, PassConfig, Takes


class Convert(PassConfig):
    """ONNX (export, or an opset change), torch (from ONNX, so PyTorch passes apply), or a torch artifact
    (`pt2`: a torch.export ExportedProgram; `torchscript`). The job's artifact is ONNX when no convert
    names another format."""

    type: Literal["convert"]
    to: Literal["onnx", "torch", "pt2", "torchscript"] = "onnx"
    opset: int | None = Field(
        None,
        ge=11,
        le=23,
        description="target ONNX opset; default: an ONNX model keeps its own, a torch model gets the exporter's "
        "default (18)",
    )
    converts = True

    @model_validator(mode="after")
    def _opset_for_onnx(self) -> "Convert":
        if self.opset is not None and self.to != "onnx":
            raise ValueError(f"opset applies to `to: onnx` only, not {self.to!r}")
        return self

    def takes(self) -> Takes:
        return "any"

    def gives(self, given: Format) -> Format:
        if self.to == "torch":
            return "torch" if given == "onnx" else given  # a torch model stays as it is
        return self.to

    def artifact_format(self) -> ArtifactFormat | None:
        return None if self.to == "torch" else self.to


Config = Convert
