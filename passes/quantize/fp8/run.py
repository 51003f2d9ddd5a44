"""fp8 e4m3 Linear layers: the weight quantized once (amax scaling per row or per tensor), each activation
quantized at run time the same way (or by a per-layer scale calibrated once: static), the product on fp8
tensor cores with the scales applied in its epilogue
(torch._scaled_mm) and a bf16 result. Plain aten ops on plain tensors, so the module exports to a .pt2 that any
torch with CUDA loads, with no extra library. Chosen over torchao's Float8 tensor subclasses for that reason."""

from collections.abc import Callable

import torch
from torch import nn

from app.schemas.errors import JobErrorCode
from passes.quantize.fp8.config import Fp8
from workers.context import PassContext
from workers.datasets import batches
from workers.gpu import OnGpu, frozen, linears, nothing_replaced, on_gpu, replace_linears, require_gpu
from workers.runtime import Feeds, ModelHandle

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
    weights can compare them), its scale [1, out] (per row) or scalar; bias in bf16. With `input_scale` (a
    calibrated scalar) x is scaled by it, in bf16, instead of by its own max."""

    def __init__(self, layer: nn.Linear, per_row: bool, input_scale: torch.Tensor | None = None) -> None:
        super().__init__()
        weight = layer.weight.detach().float()
        scale = amax_scale(weight, per_row)
        self.per_row = per_row
        self.weight = frozen(to_e4m3(weight, scale).view(torch.uint8))
        self.weight_scale = frozen(scale.reshape(1, -1) if per_row else scale)
        self.bias = frozen(layer.bias.detach().to(torch.bfloat16)) if layer.bias is not None else None
        self.input_scale = frozen(input_scale) if input_scale is not None else None

    def activation_scale(self, rows: torch.Tensor) -> torch.Tensor:
        if self.input_scale is None:
            return amax_scale(rows, self.per_row)
        # _scaled_mm takes row scales [M, 1] beside row-wise weight scales, one scalar beside a scalar
        return self.input_scale.expand(rows.shape[0], 1).contiguous() if self.per_row else self.input_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        scale = self.activation_scale(rows)
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


def input_scales(module: nn.Module, handle: ModelHandle, feeds: list[Feeds]) -> dict[str, torch.Tensor]:
    """Per Linear (by name), the static scale of its input: the largest |x| over the calibration batches, run
    through the bf16 module on the GPU, mapped to e4m3's largest value."""
    amax: dict[str, torch.Tensor] = {}

    def observe(name: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
        def hook(_: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            seen = args[0].detach().abs().amax().float()
            amax[name] = torch.maximum(amax[name], seen) if name in amax else seen

        return hook

    hooks = [layer.register_forward_pre_hook(observe(name)) for _, _, name, layer in linears(module) if fits(layer)]
    try:
        with torch.inference_mode():
            for batch in feeds:
                OnGpu(module, torch.bfloat16)(*[torch.from_numpy(batch[n]) for n in handle.input_names])
    finally:
        for h in hooks:
            h.remove()
    return {name: (value / E4M3_MAX).clamp(min=1e-12) for name, value in amax.items()}


def calibration_feeds(config: Fp8, handle: ModelHandle, ctx: PassContext) -> list[Feeds]:
    if config.calibration is None:
        return ctx.evaluation or [ctx.example]
    data = ctx.datasets[config.calibration.dataset_id]
    return [
        f
        for f, _ in batches(
            data, handle.input_names, len(ctx.example[handle.input_names[0]]), config.calibration.samples
        )
    ]


def run(config: Fp8, handle: ModelHandle, ctx: PassContext) -> ModelHandle:
    require_gpu(ctx, "quantize fp8", capability=(8, 9))
    module = on_gpu(handle.module, torch.bfloat16)
    per_row = config.scaling == "per_row"
    scales = (
        input_scales(module, handle, calibration_feeds(config, handle, ctx)) if config.activations == "static" else {}
    )

    def make(name: str, layer: nn.Linear) -> Fp8Linear | None:
        if not fits(layer) or (config.activations == "static" and name not in scales):
            return None  # a layer the calibration never reached keeps bf16
        return Fp8Linear(layer, per_row, scales.get(name))

    replaced, left = replace_linears(module, make, config.modules_to_exclude)
    if not replaced:
        raise nothing_replaced(JobErrorCode.nothing_to_quantize, "quantize fp8", left)
    ctx.metrics["fp8"] = {
        "layers": len(replaced),
        "left_in_bf16": left,
        "scaling": config.scaling,
        "activations": config.activations,
    }
    return handle.with_torch(OnGpu(module, torch.bfloat16))
