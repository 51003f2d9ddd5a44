"""prune semi_structured_2_4: in every group of 4 consecutive inputs of a Linear weight, the 2 of least
importance are zeroed (magnitude, or Wanda: |w| times the input's activation norm), an optional short
fine-tune keeps the pattern, then the weights are stored compressed for 2:4 sparse tensor-core kernels:
cuSPARSELt's in bf16 (compute capability 8.0+: Ampere, Hopper), or torchao's CUTLASS kernel with fp8 e4m3
weights and activations (`dtype: fp8`, Hopper: 9.0)."""

from typing import Literal

from pydantic import Field

from passes.finetune import FinetuneConfig
from passes.gpu import GpuModulePass


class SemiStructured(GpuModulePass):
    """2:4 semi-structured sparsity on the Linear layers, run with cuSPARSELt; delivered as .pt2."""

    type: Literal["prune"]
    method: Literal["semi_structured_2_4"]
    importance: Literal["magnitude", "wanda"] = Field(
        "magnitude",
        description="magnitude: |w|; wanda: |w| times the L2 norm of its input over the evaluation batch "
        "(activation-aware, keeps what the data uses)",
    )
    finetune: FinetuneConfig | None = Field(None, description="train after pruning, the 2:4 pattern kept")
    dtype: Literal["bf16", "fp8"] = Field(
        "bf16",
        description="bf16: cuSPARSELt's 2:4 product (plain torch ops); fp8: weights (one scale per row) and "
        "activations (one scale per layer, calibrated on the evaluation batches) in e4m3, multiplied by torchao's "
        "CUTLASS 2:4 fp8 kernel for Hopper; the .pt2 then needs torchao where it is served",
    )
    modules_to_exclude: list[str] = Field(
        default_factory=list, description="Linear layers (module names, e.g. `classifier`) left dense"
    )
    needs_gpu = (
        "2:4 sparse matrix products run on NVIDIA sparse tensor cores (cuSPARSELt, compute capability 8.0+; fp8: "
        "torchao's CUTLASS kernel, 9.0)"
    )


Config = SemiStructured
