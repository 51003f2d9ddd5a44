"""Weight-only int8 and int4 Linear layers on the GPU, with torch's own ops (plain tensors, so the .pt2 needs
no extra library where it is served): int8 cast to bf16 in the product (eager), or dequantized to a bf16
weight before it under torch.compile and torch.export; int4 packed for torch._weight_int4pack_mm (tinygemm),
the layout gpt-fast and torchao use."""

import torch
from torch import nn

from app.schemas.errors import JobErrorCode
from passes.quantize.weight_only.config import Config, Int4WeightOnly
from workers.context import PassContext
from workers.gpu import OnGpu, frozen, nothing_replaced, on_gpu, replace_linears, require_gpu
from workers.runtime import ModelHandle

INNER_K_TILES = 8
"""tinygemm's tiling of the input dimension: inputs must be a multiple of INNER_K_TILES * 16"""


class Int8WeightOnlyLinear(nn.Module):
    """y = (x W_q^T) * s + b: the int8 weight cast to bf16 in the product, its per-channel scale after. Under
    torch.compile (and torch.export, which traces the same way) the weight is dequantized first, W_q * s, and
    multiplied in bf16: Inductor would otherwise fuse the cast into a Triton matmul of its own that was 60x
    slower than cuBLAS on an H200 (BERT-large at batch 1: 44.6 ms compiled against 6.4 ms eager)."""

    def __init__(self, layer: nn.Linear) -> None:
        super().__init__()
        weight = layer.weight.detach().float()
        scale = (weight.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
        self.weight = frozen(torch.round(weight / scale[:, None]).clamp(-128, 127).to(torch.int8))
        self.scale = frozen(scale.to(torch.bfloat16))
        self.bias = frozen(layer.bias.detach().to(torch.bfloat16)) if layer.bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return nn.functional.linear(x, self.weight.to(x.dtype) * self.scale[:, None], self.bias)
        out = nn.functional.linear(x, self.weight.to(x.dtype)) * self.scale
        return out + self.bias if self.bias is not None else out


def int4_groups(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric 4-bit groups along the input: (codes 0..15 as int32 [out, in], scales and zeros [out, groups])
    with w ~= (code - 8) * scale + zero, tinygemm's convention."""
    out_features, in_features = weight.shape
    groups = weight.float().reshape(out_features, in_features // group_size, group_size)
    low, high = groups.amin(dim=2, keepdim=True), groups.amax(dim=2, keepdim=True)
    scales = ((high - low) / 15).clamp(min=1e-6)
    zeros = low + scales * 8
    codes = ((groups - low) / scales).round().clamp(0, 15).to(torch.int32)
    return codes.reshape(out_features, in_features), scales.squeeze(2), zeros.squeeze(2)


class Int4WeightOnlyLinear(nn.Module):
    """y = x W^T + b with W in 4-bit groups, packed for torch._weight_int4pack_mm (bf16 activations)."""

    def __init__(self, layer: nn.Linear, group_size: int) -> None:
        super().__init__()
        codes, scales, zeros = int4_groups(layer.weight.detach(), group_size)
        packed = (codes[:, ::2] << 4 | codes[:, 1::2]).to(torch.uint8)
        self.group_size = group_size
        self.out_features = layer.out_features
        self.weight = frozen(torch.ops.aten._convert_weight_to_int4pack(packed.contiguous(), INNER_K_TILES))
        together = torch.stack([scales, zeros], dim=2).transpose(0, 1).contiguous()
        self.scales_and_zeros = frozen(together.to(torch.bfloat16))
        self.bias = frozen(layer.bias.detach().to(torch.bfloat16)) if layer.bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1]).contiguous()
        out = torch.ops.aten._weight_int4pack_mm(rows, self.weight, self.group_size, self.scales_and_zeros)
        out = out.reshape(*x.shape[:-1], self.out_features)
        return out + self.bias if self.bias is not None else out


def make_layer(config: Config, layer: nn.Linear) -> nn.Module | None:
    if not isinstance(config, Int4WeightOnly):
        return Int8WeightOnlyLinear(layer)
    if layer.in_features % (INNER_K_TILES * 16) or layer.in_features % config.group_size or layer.out_features % 8:
        return None
    return Int4WeightOnlyLinear(layer, config.group_size)


def run(config: Config, handle: ModelHandle, ctx: PassContext) -> ModelHandle:
    require_gpu(ctx, f"quantize {config.method}")
    module = on_gpu(handle.module, torch.bfloat16)
    replaced, left = replace_linears(module, lambda _, layer: make_layer(config, layer), config.modules_to_exclude)
    if not replaced:
        raise nothing_replaced(JobErrorCode.nothing_to_quantize, f"quantize {config.method}", left)
    ctx.metrics["weight_only"] = {"bits": 4 if isinstance(config, Int4WeightOnly) else 8, "layers": len(replaced)}
    ctx.metrics["weight_only"]["left_in_bf16"] = left
    return handle.with_torch(OnGpu(module, torch.bfloat16))
