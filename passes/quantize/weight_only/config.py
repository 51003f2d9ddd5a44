"""quantize int8_weight_only and int4_weight_only: Linear weights stored in 8 or 4 bits on the GPU (int8 per
output channel; int4 in groups along the input, each group with a bf16 scale and zero), activations and the
rest of the model in bf16. Memory-bound layers (small batches: generation, batch-1 serving) read fewer bytes."""

from typing import Literal

from pydantic import Field

from passes.gpu import GpuModulePass

NEEDS_GPU = "its kernels (a bf16 GPU matmul on dequantized int8 weights, the packed-int4 tinygemm) run on CUDA"


class _WeightOnly(GpuModulePass):
    type: Literal["quantize"]
    modules_to_exclude: list[str] = Field(
        default_factory=list, description="Linear layers (module names, e.g. `classifier`) left in bf16"
    )
    needs_gpu = NEEDS_GPU


class Int8WeightOnly(_WeightOnly):
    """int8 weights with one bf16 scale per output channel; x W^T computed in bf16 on the dequantized weight."""

    method: Literal["int8_weight_only"]


class Int4WeightOnly(_WeightOnly):
    """4-bit weights in groups of `group_size` inputs (asymmetric: a scale and a zero per group), through
    torch's packed-int4 matmul (tinygemm). Layers whose input size is not a multiple of 128 stay in bf16."""

    method: Literal["int4_weight_only"]
    group_size: Literal[32, 64, 128, 256] = Field(128, description="inputs per scale and zero")


Config = Int8WeightOnly | Int4WeightOnly
