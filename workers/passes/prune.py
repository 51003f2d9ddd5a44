"""prune: remove weights from a torch model.

magnitude and threshold zero weights (masks kept through fine-tuning): the file stays dense, so the step
reports sparsity and the weights' size compressed with zstd, which is where unstructured sparsity pays.
structured removes whole channels/features with torch-pruning (the tensors really shrink), keeping the
final layer's outputs, so the model's interface is unchanged.
"""

import copy
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from app.schemas.passes import PruneConfig
from workers.passes.base import Pass, PassContext
from workers.runtime import ModelHandle, PassFailed
from workers.training import Finetuner, forward

ZSTD_LEVEL = 3


def prunable_weights(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Matrices and kernels (weights of 2 or more dimensions); biases and norms are left alone."""
    return [(name, p) for name, p in module.named_parameters() if p.dim() >= 2 and name.endswith("weight")]


def weight_stats(module: nn.Module) -> dict[str, Any]:
    """Share of zero weights over all parameters, and all weights' float32 bytes, raw and compressed with
    zstd."""
    import zstandard

    params = [p.detach().float().cpu().numpy() for p in module.parameters()]
    total = sum(p.size for p in params)
    zeros = sum(int((p == 0).sum()) for p in params)
    raw = b"".join(np.ascontiguousarray(p).tobytes() for p in params)
    compressed = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(raw)
    return {
        "sparsity": zeros / total if total else 0.0,
        "zero_weights": zeros,
        "weights": total,
        "weights_bytes": len(raw),
        "weights_zstd_bytes": len(compressed),
    }


def _masks(weights: list[tuple[str, nn.Parameter]], config: PruneConfig) -> list[torch.Tensor]:
    magnitudes = [p.detach().abs() for _, p in weights]
    if config.method == "threshold":
        return [m >= float(config.threshold) for m in magnitudes]  # type: ignore[arg-type]
    sparsity = float(config.sparsity)  # type: ignore[arg-type]
    if config.scope == "layer":
        masks = []
        for m in magnitudes:
            k = int(m.numel() * sparsity)
            cut = m.flatten().kthvalue(k).values if k > 0 else torch.tensor(-1.0)
            masks.append(m > cut)
        return masks
    flat = torch.cat([m.flatten() for m in magnitudes])
    k = int(flat.numel() * sparsity)
    cut = flat.kthvalue(k).values if k > 0 else torch.tensor(-1.0)
    return [m > cut for m in magnitudes]


def last_layer(module: nn.Module, example: list[torch.Tensor]) -> nn.Module:
    """The Linear/Conv layer that runs last on an example: the classifier whose outputs must stay."""
    order: list[nn.Module] = []
    hooks = [
        m.register_forward_hook(lambda mod, *_: order.append(mod))
        for m in module.modules()
        if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d)
    ]
    try:
        with torch.no_grad():
            module(*example)
    finally:
        for hook in hooks:
            hook.remove()
    if not order:
        raise PassFailed("prune_unsupported", "structured pruning found no Linear or Conv layer to prune")
    return order[-1]


class PrunePass(Pass):
    type = "prune"
    takes = "torch"
    config: PruneConfig

    def run(self, handle: ModelHandle, ctx: PassContext) -> ModelHandle:
        finetuner = Finetuner(self.config.finetune, handle, ctx.datasets, ctx.device)
        module = copy.deepcopy(handle.module).eval()
        after_step = None
        if self.config.method == "structured":
            ctx.metrics["channels"] = self._structured(module, handle, ctx, finetuner)
        else:
            weights = prunable_weights(module)
            if not weights:
                raise PassFailed("prune_unsupported", "the model has no weight matrices or kernels to prune")
            masks = _masks(weights, self.config)
            params = [p for _, p in weights]
            with torch.no_grad():
                for p, mask in zip(params, masks, strict=True):
                    p.mul_(mask.to(p.dtype))

            def after_step() -> None:
                for p, mask in zip(params, masks, strict=True):
                    p.mul_(mask.to(device=p.device, dtype=p.dtype))

        finetuned = finetuner.run(module, after_step)
        if finetuned:
            ctx.metrics["finetune"] = finetuned
        ctx.metrics.update(weight_stats(module))
        ctx.metrics["pruned_layers"] = len(prunable_weights(module))
        return handle.with_torch(module)

    def _structured(
        self, module: nn.Module, handle: ModelHandle, ctx: PassContext, finetuner: Finetuner
    ) -> dict[str, Any]:
        import torch_pruning as tp

        example = [torch.from_numpy(ctx.example[n]) for n in handle.input_names]
        keep = last_layer(module, example)
        importance = (
            tp.importance.TaylorImportance()
            if self.config.importance == "taylor"
            else tp.importance.MagnitudeImportance(p=1 if self.config.importance == "l1" else 2)
        )
        ratio = float(self.config.ratio)  # type: ignore[arg-type]
        ratios = kept_ratios(module, ratio, self.config.round_to, keep)
        try:
            pruner = tp.pruner.MetaPruner(
                module,
                tuple(example),
                importance=importance,
                pruning_ratio=ratio,
                pruning_ratio_dict=ratios,
                ignored_layers=[keep],
            )
        except Exception as exc:  # torch-pruning's tracer raises assorted errors on graphs it cannot follow
            raise PassFailed(
                "prune_unsupported", f"torch-pruning could not trace the model: {type(exc).__name__}: {exc}"
            ) from exc
        before = {name: _width(m) for name, m in module.named_modules() if _width(m) is not None}
        if self.config.importance == "taylor":
            data = finetuner.data
            loss_fn = finetuner.loss()
            module.zero_grad()
            for index in torch.arange(min(len(data[handle.input_names[0]]), 256)).split(64):
                loss_fn(forward(module, data, handle.input_names, index.numpy(), "cpu"), index).backward()
        pruner.step()
        module.zero_grad(set_to_none=True)
        return {
            name: {"before": width, "after": _width(dict(module.named_modules())[name])}
            for name, width in before.items()
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
    if isinstance(module, nn.Conv1d | nn.Conv2d):
        return module.out_channels
    return None
