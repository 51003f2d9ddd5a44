"""What the GPU passes share at run time: the check that this worker has a suitable GPU, swapping a model's
Linear layers for quantized or sparse ones, and the wrapper that lets the GPU model take and give float32
tensors like the original, so evaluation and callers feed it what they fed the original."""

import copy
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from app.schemas.errors import JobErrorCode
from workers.context import PassContext
from workers.runtime import PassFailed

CUDA = torch.device("cuda")


def require_gpu(ctx: PassContext, what: str, capability: tuple[int, int] = (8, 0)) -> None:
    """Fail the job (gpu_unavailable) unless it runs on a CUDA worker whose GPU has `capability`."""
    if ctx.device != "cuda" or not torch.cuda.is_available():
        raise PassFailed(
            JobErrorCode.gpu_unavailable,
            f'{what} runs on an NVIDIA GPU and this worker has none: submit the job with "device": "cuda" and '
            "run GPU workers (`squeeze worker --queues gpu --gpus all`) on a GPU host",
        )
    found = torch.cuda.get_device_capability()
    if found < capability:
        raise PassFailed(
            JobErrorCode.gpu_unavailable,
            f"{what} needs a GPU of compute capability {capability[0]}.{capability[1]} or newer; this worker's "
            f"{torch.cuda.get_device_name()} is {found[0]}.{found[1]}",
        )


class OnGpu(nn.Module):
    """`module` on the GPU computing in `dtype`, float32 in and out: inputs (on any device) are moved to the
    GPU and floats cast to `dtype`; float outputs come back float32, on the GPU."""

    def __init__(self, module: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.module = module
        self.dtype = dtype

    def forward(self, *inputs: torch.Tensor) -> Any:
        moved = [x.to(CUDA, self.dtype) if x.is_floating_point() else x.to(CUDA) for x in inputs]
        result = self.module(*moved)
        if isinstance(result, list | tuple):
            return type(result)(r.float() if r.is_floating_point() else r for r in result)
        return result.float() if result.is_floating_point() else result


def on_gpu(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of `module` in eval mode on the GPU in `dtype` (the input model stays as it was)."""
    return copy.deepcopy(module).eval().to(CUDA, dtype)


def linears(module: nn.Module) -> Iterator[tuple[nn.Module, str, str, nn.Linear]]:
    """(parent, attribute, full name, layer) for every nn.Linear in `module`."""
    for parent_name, parent in list(module.named_modules()):
        for attribute, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                yield parent, attribute, f"{parent_name}.{attribute}".lstrip("."), child


def replace_linears(
    module: nn.Module, make: Callable[[str, nn.Linear], nn.Module | None], exclude: list[str]
) -> tuple[list[str], list[str]]:
    """Swap each Linear for `make(name, layer)`, unless its name is in `exclude` or `make` gives None (a shape
    its kernel cannot take). Returns (replaced, left as they were)."""
    replaced, left = [], []
    for parent, attribute, name, layer in linears(module):
        new = None if name in exclude else make(name, layer)
        if new is None:
            left.append(name)
            continue
        setattr(parent, attribute, new)
        replaced.append(name)
    return replaced, left


def frozen(tensor: torch.Tensor) -> nn.Parameter:
    """A weight the model holds but never trains: a parameter, so the shared footprint counts its bytes."""
    return nn.Parameter(tensor, requires_grad=False)


def nothing_replaced(code: JobErrorCode, what: str, left: list[str]) -> PassFailed:
    return PassFailed(
        code,
        f"{what} found no Linear layer it can take ({len(left)} left as they were: shapes must be multiples of 16, "
        "or the layer was excluded)",
    )
