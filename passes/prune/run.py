"""prune: remove weights from a torch model.

magnitude and threshold zero weights (masks kept through fine-tuning): the file stays dense, so the step
reports sparsity and the weights' size compressed with zstd, which is where unstructured sparsity pays.
structured removes whole channels/features with torch-pruning (the tensors really shrink), keeping the
final layer's outputs, so the model's interface is unchanged.
"""

import copy
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from app.schemas.errors import JobErrorCode
from passes.prune.batchnorm import reestimate
from passes.prune.config import Config, Depth, Magnitude, Structured, Threshold
from passes.prune.depth import run_depth
from workers.context import PassContext
from workers.runtime import ModelHandle, PassFailed
from workers.training import Finetuner, forward

ZSTD_LEVEL = 3


def prunable_weights(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Matrices and kernels (weights of 2 or more dimensions); biases and norms are left alone."""
    return [(name, p) for name, p in module.named_parameters() if p.dim() >= 2 and name.endswith("weight")]


def zstd_weights(module: nn.Module) -> dict[str, int]:
    """All parameters' float32 bytes, raw and compressed with zstd: where unstructured sparsity pays in a
    file that stays dense. (The share of zeros is the step's `sparsity`, computed once for every step.)"""
    import zstandard

    params = [p.detach().float().cpu().numpy() for p in module.parameters()]
    raw = b"".join(np.ascontiguousarray(p).tobytes() for p in params)
    compressed = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(raw)
    return {"weights_bytes": len(raw), "weights_zstd_bytes": len(compressed)}


def masks(weights: list[tuple[str, nn.Parameter]], config: Magnitude | Threshold) -> list[torch.Tensor]:
    """Per weight, True where it stays: |w| >= threshold, or above the sparsity quantile (global or per layer)."""
    magnitudes = [p.detach().abs() for _, p in weights]
    if isinstance(config, Threshold):
        return [m >= config.threshold for m in magnitudes]
    if config.scope == "layer":
        return [m > _cut(m.flatten(), config.sparsity) for m in magnitudes]
    cut = _cut(torch.cat([m.flatten() for m in magnitudes]), config.sparsity)
    return [m > cut for m in magnitudes]


def _cut(values: torch.Tensor, sparsity: float) -> torch.Tensor:
    k = int(values.numel() * sparsity)
    return values.kthvalue(k).values if k > 0 else torch.tensor(-1.0)


def last_layer(module: nn.Module, example: list[torch.Tensor]) -> nn.Module:
    """The Linear/Conv layer that runs last on an example: the classifier (or a detector's transposed-conv
    head) whose outputs must stay."""
    order: list[nn.Module] = []
    hooks = [
        m.register_forward_hook(lambda mod, *_: order.append(mod))
        for m in module.modules()
        if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d | nn.ConvTranspose1d | nn.ConvTranspose2d)
    ]
    try:
        with torch.no_grad():
            module(*example)
    finally:
        for hook in hooks:
            hook.remove()
    if not order:
        raise PassFailed(JobErrorCode.prune_unsupported, "structured pruning found no Linear or Conv layer to prune")
    return order[-1]


def run(config: Config, handle: ModelHandle, ctx: PassContext) -> ModelHandle:
    if isinstance(config, Depth):
        return run_depth(config, handle, ctx)
    finetuner = Finetuner(config.finetune, handle, ctx.datasets, ctx.device)
    module = copy.deepcopy(handle.module).eval()
    after_step = None
    if isinstance(config, Structured):
        ctx.metrics["channels"] = remove_channels(module, config, handle, ctx, finetuner)
    else:
        after_step = zero_weights(module, config)
    if config.batchnorm is not None:
        ctx.metrics["batchnorm"] = reestimate(module, handle.module, config.batchnorm, handle, ctx.datasets)
    finetuned = finetuner.run(module, after_step)
    if finetuned:
        ctx.metrics["finetune"] = finetuned
    ctx.metrics.update(zstd_weights(module))
    ctx.metrics["pruned_layers"] = len(prunable_weights(module))
    return handle.with_torch(module)


def zero_weights(module: nn.Module, config: Magnitude | Threshold) -> Callable[[], None]:
    """Zero the weights the masks drop; returns what re-applies them after each fine-tuning step."""
    weights = prunable_weights(module)
    if not weights:
        raise PassFailed(JobErrorCode.prune_unsupported, "the model has no weight matrices or kernels to prune")
    kept = masks(weights, config)
    params = [p for _, p in weights]

    def reapply() -> None:
        with torch.no_grad():
            for p, mask in zip(params, kept, strict=True):
                p.mul_(mask.to(device=p.device, dtype=p.dtype))

    reapply()
    return reapply


def remove_channels(
    module: nn.Module, config: Structured, handle: ModelHandle, ctx: PassContext, finetuner: Finetuner
) -> dict[str, Any]:
    """Remove channels with torch-pruning; returns each layer's width before and after."""
    import torch_pruning as tp

    example = [torch.from_numpy(ctx.example[n]) for n in handle.input_names]
    keep = last_layer(module, example)
    importance = (
        tp.importance.TaylorImportance()
        if config.importance == "taylor"
        else tp.importance.MagnitudeImportance(p=1 if config.importance == "l1" else 2)
    )
    try:
        pruner = tp.pruner.MetaPruner(
            module,
            tuple(example),
            importance=importance,
            pruning_ratio=config.ratio,
            pruning_ratio_dict=kept_ratios(module, config.ratio, config.round_to, keep),
            ignored_layers=[keep],
        )
    except Exception as exc:  # torch-pruning's tracer raises assorted errors on graphs it cannot follow
        raise PassFailed(
            JobErrorCode.prune_unsupported,
            f"torch-pruning could not follow this model's graph ({type(exc).__name__}); use method 'magnitude' "
            "or 'threshold', which work on any model",
        ) from exc
    before = {name: _width(m) for name, m in module.named_modules() if _width(m) is not None}
    if config.importance == "taylor":
        data = finetuner.data
        loss_fn = finetuner.loss()
        module.zero_grad()
        for index in torch.arange(min(len(data[handle.input_names[0]]), 256)).split(64):
            loss_fn(forward(module, data, handle.input_names, index.numpy(), "cpu"), index).backward()
    pruner.step()
    module.zero_grad(set_to_none=True)
    return {
        name: {"before": width, "after": _width(dict(module.named_modules())[name])} for name, width in before.items()
    }


def kept_ratios(module: nn.Module, ratio: float, round_to: int | None, keep: nn.Module) -> dict[nn.Module, float]:
    """Per-layer ratios that keep ceil((1 - ratio) x width) channels rounded up to a multiple of `round_to`
    (torch-pruning keeps int(width x (1 - ratio)), so half a channel of margin makes the count exact)."""
    if not round_to:
        return {}
    ratios = {}
    for layer in module.modules():
        width = _width(layer)
        if width is None or layer is keep:
            continue
        kept = min(width, math.ceil(width * (1 - ratio) / round_to) * round_to)
        ratios[layer] = max(0.0, 1 - (kept + 0.5) / width)
    return ratios


def _width(module: nn.Module) -> int | None:
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, nn.Conv1d | nn.Conv2d | nn.ConvTranspose1d | nn.ConvTranspose2d):
        return module.out_channels
    return None
