"""quantize fp8: Linear layers (attention projections included) in fp8 e4m3 on the GPU's tensor cores, weights
scaled per output row (or per tensor), activations scaled dynamically at run time or by scales calibrated
once (static); the rest of the model in bf16. Needs compute capability 8.9 or newer (Ada, Hopper)."""

from typing import Literal

from pydantic import Field

from passes.base import CalibrationSet
from passes.gpu import GpuModulePass


class Fp8(GpuModulePass):
    """fp8 (e4m3) matrix products through torch._scaled_mm, bf16 elsewhere; delivered as .pt2."""

    type: Literal["quantize"]
    method: Literal["fp8"]
    scaling: Literal["per_row", "per_tensor"] = Field(
        "per_row",
        description="per_row: one scale per weight row and per activation row (closer outputs); per_tensor: one "
        "scale each for the weight and the activation",
    )
    activations: Literal["dynamic", "static"] = Field(
        "dynamic",
        description="dynamic: each activation's scale from its own max at run time; static: one scale per layer "
        "from the largest input seen on the calibration samples (no max at run time: under torch.compile the "
        "cast fuses into the op before, as NVIDIA Model Optimizer's fp8 does)",
    )
    calibration: CalibrationSet | None = Field(
        None, description="static activations: the samples the scales come from (default: the evaluation batches)"
    )
    modules_to_exclude: list[str] = Field(
        default_factory=list, description="Linear layers (module names, e.g. `classifier`) left in bf16"
    )
    needs_gpu = "fp8 matrix products need an NVIDIA GPU with fp8 tensor cores (compute capability 8.9+)"


Config = Fp8
