"""What every pass config is: its parameters, the form of the model it works on, and its rules in a
pipeline. Pydantic only: the API validates and plans with these and never imports torch."""

from collections.abc import Sequence
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

Form = Literal["onnx", "torch"]
"""The two representations a model takes in the pipeline: an ONNX file, or a torch module."""
Takes = Literal["onnx", "torch", "any"]
Format = Literal["onnx", "torch", "pt2", "torchscript", "openvino", "tflite"]
"""What the model is between steps: ONNX, a torch module in memory, a torch module loaded back from
the .pt2 / TorchScript file it was saved as (so that file is exactly this model), or an OpenVINO IR or a
TFLite flatbuffer (the end of a pipeline: no pass works on them)."""
ArtifactFormat = Literal["onnx", "pt2", "torchscript", "openvino", "tflite"]


def form_of(fmt: Format) -> Form:
    return "onnx" if fmt == "onnx" else "torch"


class FidelityFloors(BaseModel):
    """The least mean cosine to the original a result may have, by what made it (the settings'
    FIDELITY_FLOOR_*); `constraints.min_cosine` in the spec replaces them. Below the floor the verdict fails,
    and the quantize pass keeps the responsible nodes in float to get above it."""

    model_config = ConfigDict(extra="forbid")

    fp16: float = Field(ge=-1, le=1, description="half precision: fp16 and bf16")
    int8: float = Field(ge=-1, le=1)
    int4: float = Field(ge=-1, le=1)
    generic: float = Field(ge=-1, le=1, description="a pass meant to change the function (prune, lowrank, distill)")
    retries: int = Field(ge=0, description="quantization attempts after the first to get above the floor")


class Part(BaseModel):
    """A nested part of a pass config (calibration, fine-tuning): unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class CalibrationSet(Part):
    """The samples a pass calibrates on: the first `samples` of a dataset of the model's inputs."""

    dataset_id: str = Field(description="a dataset of the model's inputs (POST /v1/datasets)")
    samples: int = Field(128, ge=1, le=100_000, description="the first N samples of the dataset are run")


class PassConfig(BaseModel):
    """The base of every pass's config. A subclass sets `type` (a Literal equal to its folder's name) and,
    for method variants, `method`; it overrides the hooks below only where its pass differs. Fields named
    `dataset_id`, at any depth, name datasets: the API checks each at submit and the worker loads it."""

    model_config = ConfigDict(extra="forbid")

    type: str
    converts: ClassVar[bool] = False
    """A conversion: its outputs must match those of the model it converted (fidelity checked)."""
    needs_gpu: ClassVar[str | None] = None
    """Set on a pass that runs only on an NVIDIA GPU: why, in words. A job with `device: cpu` that names it
    is refused at submit (422 needs_gpu)."""

    def checks_conversion(self) -> bool:
        """Whether the pipeline holds this step's outputs to those of the model it was given (a conversion
        that keeps the function; a conversion that also quantizes is held to its fidelity floor instead)."""
        return self.converts

    def takes(self) -> Takes:
        """The form this configured pass needs its model in; the planner converts to it automatically."""
        return "torch"

    def gives(self, given: Format) -> Format:
        """What the model is after this pass, given what it was: a pass on a torch module gives a new
        module in memory, a pass on ONNX a new ONNX file."""
        form = form_of(given) if self.takes() == "any" else self.takes()
        return "onnx" if form == "onnx" else "torch"

    def artifact_format(self) -> ArtifactFormat | None:
        """The artifact format this pass asks the job to end in, or None."""
        return None

    def label(self) -> str:
        """How progress and the report name this step: the type, and the method where there is one."""
        method = getattr(self, "method", None)
        return f"{self.type} {method}" if isinstance(method, str) else self.type

    def fidelity_floor(self, floors: FidelityFloors) -> float | None:
        """The least cosine to the original this pass may leave; None for a pass meant to keep the outputs
        (a conversion, which is checked against its own input instead)."""
        return None if self.converts else floors.generic

    def pipeline_problem(self, later: Sequence["PassConfig"]) -> str | None:
        """Why this pass cannot be followed by `later` (the passes after it), or None when it can."""
        return None
