"""2:4 semi-structured sparsity: masks chosen on the float32 model (magnitude or Wanda), an optional
fine-tune with the masks re-applied after every step, then each masked Linear compressed for a sparse
kernel. bf16: cuSPARSELt (torch._cslt_compress, torch._cslt_sparse_mm), the kernels behind
torch.sparse.to_sparse_semi_structured, called on plain tensors so the module exports to a .pt2 with torch
alone. fp8: weights and activations in e4m3 for torchao's CUTLASS sm90 kernel
(torchao.ops.rowwise_scaled_linear_sparse_cutlass_f8f8), chosen because cuSPARSELt's bf16 product on
torch 2.11 + CUDA 13 is slower than the dense one below 8192 wide on an H200, and its fp8 product there
refuses per-row scales; torchao's is faster than dense fp8 at every width measured."""

import copy
from collections.abc import Callable

import torch
from torch import nn

from app.schemas.errors import JobErrorCode
from passes.prune.semi_structured.config import SemiStructured
from passes.quantize.fp8.run import E4M3, amax_scale, input_scales, to_e4m3
from workers.context import PassContext
from workers.gpu import CUDA, OnGpu, frozen, linears, nothing_replaced, on_gpu, replace_linears, require_gpu
from workers.runtime import ModelHandle, PassFailed
from workers.training import Finetuner

DENSE_ALIGN = 8
"""cuSPARSELt takes a bf16 dense operand whose sides are multiples of 8: token rows are padded to it"""


def fits(layer: nn.Linear) -> bool:
    """cuSPARSELt's bf16 sparse operand: both sides multiples of 16 (and at least 32 rows)."""
    return layer.in_features % 16 == 0 and layer.out_features % 16 == 0 and layer.out_features >= 32


def two_of_four(score: torch.Tensor) -> torch.Tensor:
    """The mask keeping the 2 highest scores of every 4 consecutive inputs of each row."""
    groups = score.reshape(-1, 4)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(1, groups.topk(2, dim=1).indices, True)
    return keep.reshape(score.shape)


def input_norms(
    module: nn.Module, layers: dict[str, nn.Linear], handle: ModelHandle, ctx: PassContext
) -> dict[str, torch.Tensor]:
    """The L2 norm of each input feature of each layer over the evaluation batch (Wanda's activation term)."""
    norms: dict[str, torch.Tensor] = {}

    def keep(name: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
        def hook(_: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            norms[name] = args[0].detach().float().reshape(-1, args[0].shape[-1]).norm(dim=0).cpu()

        return hook

    hooks = [layer.register_forward_pre_hook(keep(name)) for name, layer in layers.items()]
    try:
        with torch.inference_mode():
            module(*[torch.from_numpy(ctx.example[n]) for n in handle.input_names])
    finally:
        for h in hooks:
            h.remove()
    return norms


def masks(module: nn.Module, config: SemiStructured, handle: ModelHandle, ctx: PassContext) -> dict[str, torch.Tensor]:
    """The 2:4 mask of every Linear the kernels take, by module name."""
    chosen = {
        name: layer for _, _, name, layer in linears(module) if fits(layer) and name not in config.modules_to_exclude
    }
    norms = input_norms(module, chosen, handle, ctx) if config.importance == "wanda" else {}
    found = {}
    for name, layer in chosen.items():
        score = layer.weight.detach().abs()
        if name in norms:
            score = score * norms[name].to(score.device)[None, :]
        found[name] = two_of_four(score)
    return found


class SemiStructuredLinear(nn.Module):
    """y = x W^T + b with W 2:4-sparse, compressed for cuSPARSELt; x in bf16, token rows padded to 8."""

    def __init__(self, layer: nn.Linear) -> None:
        super().__init__()
        weight = layer.weight.detach().to(CUDA, torch.bfloat16).contiguous()
        self.out_features = layer.out_features
        self.weight = frozen(torch._cslt_compress(weight))
        self.bias = frozen(layer.bias.detach().to(CUDA, torch.bfloat16)) if layer.bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        count = rows.shape[0]
        pad = (-count) % DENSE_ALIGN
        if pad:
            rows = nn.functional.pad(rows, (0, 0, 0, pad))
        out = torch._cslt_sparse_mm(self.weight, rows.t(), bias=self.bias, transpose_result=True)
        return out[:count].reshape(*x.shape[:-1], self.out_features)


class SemiStructuredFp8Linear(nn.Module):
    """y = x W^T + b with W 2:4-sparse in e4m3 (one scale per row), compressed for torchao's CUTLASS kernel,
    and x in e4m3 by one calibrated scale; bf16 out. The e4m3 bytes are kept as uint8, as Fp8Linear keeps
    them."""

    def __init__(self, layer: nn.Linear, input_scale: torch.Tensor) -> None:
        from torchao.ops import to_sparse_semi_structured_cutlass_sm9x_f8

        super().__init__()
        weight = layer.weight.detach().to(CUDA, torch.float32)
        scale = amax_scale(weight, per_row=True)
        packed, meta = to_sparse_semi_structured_cutlass_sm9x_f8(to_e4m3(weight, scale))
        self.out_features = layer.out_features
        self.weight = frozen(packed.view(torch.uint8))
        self.weight_meta = frozen(meta)
        self.weight_scale = frozen(scale.reshape(-1))
        self.input_scale = frozen(input_scale)
        self.bias = frozen(layer.bias.detach().to(CUDA, torch.bfloat16)) if layer.bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        out = torch.ops.torchao.rowwise_scaled_linear_sparse_cutlass_f8f8(
            to_e4m3(rows, self.input_scale),
            self.input_scale.expand(rows.shape[0]).contiguous(),
            self.weight.view(E4M3),
            self.weight_meta,
            self.weight_scale,
            self.bias,
            torch.bfloat16,
        )
        return out.reshape(*x.shape[:-1], self.out_features)


def torchao_ops() -> None:
    """Import torchao's kernels, or fail the job saying how to install them."""
    try:
        import torchao.ops  # noqa: F401  (registers torch.ops.torchao)
    except ImportError as exc:
        raise PassFailed(
            JobErrorCode.gpu_unavailable,
            "prune semi_structured_2_4 with dtype fp8 runs torchao's CUTLASS kernel and this worker has no torchao: "
            "install the GPU extra (pip install '.[gpu]', as the worker-gpu image does) or use dtype bf16",
        ) from exc


def sparse_layers(
    config: SemiStructured, gpu: nn.Module, kept: dict[str, torch.Tensor], handle: ModelHandle, ctx: PassContext
) -> tuple[list[str], list[str]]:
    """Swap every masked Linear of the bf16 GPU module for its sparse form."""
    if config.dtype == "bf16":
        return replace_linears(gpu, lambda name, layer: SemiStructuredLinear(layer) if name in kept else None, [])
    scales = input_scales(gpu, handle, ctx.evaluation or [ctx.example])
    return replace_linears(
        gpu,
        lambda name, layer: SemiStructuredFp8Linear(layer, scales[name]) if name in kept and name in scales else None,
        [],
    )


def run(config: SemiStructured, handle: ModelHandle, ctx: PassContext) -> ModelHandle:
    require_gpu(ctx, "prune semi_structured_2_4", capability=(9, 0) if config.dtype == "fp8" else (8, 0))
    if config.dtype == "fp8":
        torchao_ops()
    finetuner = Finetuner(config.finetune, handle, ctx.datasets, ctx.device)
    module = copy.deepcopy(handle.module).eval()
    kept = masks(module, config, handle, ctx)
    if not kept:
        raise nothing_replaced(JobErrorCode.prune_unsupported, "prune semi_structured_2_4", [])

    layers = dict(module.named_modules())

    def reapply() -> None:
        with torch.no_grad():
            for name, mask in kept.items():
                weight = layers[name].weight
                weight.mul_(mask.to(weight.device, weight.dtype))

    reapply()
    finetuned = finetuner.run(module, reapply)
    if finetuned:
        ctx.metrics["finetune"] = finetuned
    gpu = on_gpu(module, torch.bfloat16)
    replaced, left = sparse_layers(config, gpu, kept, handle, ctx)
    ctx.metrics["semi_structured"] = {
        "layers": len(replaced),
        "left_dense": left,
        "importance": config.importance,
        "dtype": config.dtype,
    }
    if config.dtype == "fp8":
        ctx.metrics["serving_requires"] = "import torchao (0.18, its CUDA kernels) before loading"
    return handle.with_torch(OnGpu(gpu, torch.bfloat16))
