"""fp8 e4m3 Linear layers: the weight quantized once (amax scaling per row or per tensor), each activation
quantized at run time the same way, the product on fp8 tensor cores with the scales applied in its epilogue
(torch._scaled_mm) and a bf16 result. Plain aten ops on plain tensors, so the module exports to a .pt2 that any
torch with CUDA loads, with no extra library. Chosen over torchao's Float8 tensor subclasses for that reason."""

import torch
from torch import nn

from app.schemas.errors import JobErrorCode
from passes.quantize.fp8.config import Fp8
from workers.context import PassContext
from workers.gpu import OnGpu, frozen, nothing_replaced, on_gpu, replace_linears, require_gpu
from workers.runtime import ModelHandle

E4M3 = torch.float8_e4m3fn
E4M3_MAX = float(torch.finfo(E4M3).max)


def amax_scale(x: torch.Tensor, per_row: bool) -> torch.Tensor:
    """float32 scale mapping |x|'s max (of each row, or of the whole tensor) to e4m3's largest value (the
    max-norm reads x once, with no |x| temporary)."""
    amax = torch.linalg.vector_norm(x, ord=float("inf"), dim=-1 if per_row else None, keepdim=per_row)
    return (amax.float() / E4M3_MAX).clamp(min=1e-12)


def to_e4m3(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x / scale in e4m3 (float32 division, clamped: e4m3fn has no infinity, so an overflow would be NaN)."""
    return (x / scale).clamp_(-E4M3_MAX, E4M3_MAX).to(E4M3)


class Fp8Linear(nn.Module):
    """y = x W^T + b with x and W in e4m3: W's e4m3 bytes kept as uint8 (so any code that inspects the
    weights can compare them), its scale [1, out] (per row) or scalar; bias in bf16."""

    def __init__(self, layer: nn.Linear, per_row: bool) -> None:
        super().__init__()
        weight = layer.weight.detach().float()
        scale = amax_scale(weight, per_row)
        self.per_row = per_row
        self.weight = frozen(to_e4m3(weight, scale).view(torch.uint8))
        self.weight_scale = frozen(scale.reshape(1, -1) if per_row else scale)
        self.bias = frozen(layer.bias.detach().to(torch.bfloat16)) if layer.bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        scale = amax_scale(rows, self.per_row)
        out = torch._scaled_mm(
            to_e4m3(rows, scale),
            self.weight.view(E4M3).t(),
            scale_a=scale,
            scale_b=self.weight_scale,
            bias=self.bias,
            out_dtype=torch.bfloat16,
        )
        return out.reshape(*x.shape[:-1], out.shape[-1])


def fits(layer: nn.Linear) -> bool:
    """_scaled_mm takes inner and output dimensions that are multiples of 16."""
    return layer.in_features % 16 == 0 and layer.out_features % 16 == 0


def run(config: Fp8, handle: ModelHandle, ctx: PassContext) -> ModelHandle:
    require_gpu(ctx, "quantize fp8", capability=(8, 9))
    module = on_gpu(handle.module, torch.bfloat16)
    per_row = config.scaling == "per_row"
    replaced, left = replace_linears(
        module, lambda _, layer: Fp8Linear(layer, per_row) if fits(layer) else None, config.modules_to_exclude
    )
    if not replaced:
        raise nothing_replaced(JobErrorCode.nothing_to_quantize, "quantize fp8", left)
    ctx.metrics["fp8"] = {"layers": len(replaced), "left_in_bf16": left, "scaling": config.scaling}
    return handle.with_torch(OnGpu(module, torch.bfloat16))
