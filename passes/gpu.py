"""What the GPU-only methods (fp8, weight-only int8/int4, 2:4 sparsity) share in their configs: they work on
the torch module, need a GPU worker, and end as a .pt2 a GPU server loads. Pydantic only; their work is in
workers.gpu and each method folder's run.py."""

from collections.abc import Sequence

from passes.base import ArtifactFormat, PassConfig, Takes


class GpuModulePass(PassConfig):
    """A pass whose result computes with PyTorch's CUDA kernels (tensor cores in fp8, packed int4, cuSPARSELt):
    only a torch artifact keeps them, so the job ends in .pt2 (the planner adds the export)."""

    def takes(self) -> Takes:
        return "torch"

    def artifact_format(self) -> ArtifactFormat | None:
        return "pt2"

    def pipeline_problem(self, later: Sequence[PassConfig]) -> str | None:
        for config in later:
            if not (config.converts and config.artifact_format() in (None, "pt2")):
                return (
                    f"{self.label()} leaves a model of PyTorch CUDA kernels, delivered as .pt2: {config.label()} "
                    "cannot follow it; put the other passes before it"
                )
        return None
