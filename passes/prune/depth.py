"""prune depth: drop the decoder layers that change their input least.

Each layer's importance is 1 - the mean cosine between its input and output hidden states over the real
(unpadded) tokens of the dataset: a layer whose output is nearly its input (the residual stream passing
through) costs little to remove (ShortGPT's Block Influence). The `ratio` least important layers go."""

import copy
from typing import Any

import torch
from torch import nn

from app.schemas.errors import JobErrorCode
from passes.prune.config import Depth
from workers.context import PassContext
from workers.datasets import batches
from workers.layers import deepest_stack, keep_layers
from workers.runtime import HuggingFaceModule, ModelHandle, PassFailed

BATCH = 8


def layer_importance(module: HuggingFaceModule, stack: nn.ModuleList, feeds: list[dict[str, Any]]) -> list[float]:
    """1 - mean cosine(input, output) per layer of `stack`, over the tokens the attention mask keeps."""
    sums = [0.0] * len(stack)
    count = 0
    captured: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(index: int) -> Any:
        def record(layer: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            given = args[0] if args else kwargs["hidden_states"]
            returned = output[0] if isinstance(output, tuple) else output
            captured[index] = (given, returned)

        return record

    handles = [layer.register_forward_hook(hook(i), with_kwargs=True) for i, layer in enumerate(stack)]
    try:
        for batch in feeds:
            tensors = [torch.from_numpy(batch[n]) for n in module.input_names]
            with torch.inference_mode():
                module(*tensors)
            keep = torch.from_numpy(batch["attention_mask"]).bool()
            for index, (given, returned) in captured.items():
                sums[index] += float(torch.cosine_similarity(given[keep], returned[keep], dim=-1).sum())
            count += int(keep.sum())
    finally:
        for handle in handles:
            handle.remove()
    return [1 - s / max(count, 1) for s in sums]


def run_depth(config: Depth, handle: ModelHandle, ctx: PassContext) -> ModelHandle:
    if not isinstance(handle.module, HuggingFaceModule) or not handle.module.causal_lm:
        raise PassFailed(
            JobErrorCode.prune_unsupported,
            "prune method 'depth' drops decoder layers of a Hugging Face causal LM (Llama, Qwen2, Mistral, GPT-2); "
            "use method 'structured' for other models",
        )
    module = copy.deepcopy(handle.module).eval()
    why = "the causal LM has no stack of decoder layers to drop from"
    name, stack = deepest_stack(module, JobErrorCode.prune_unsupported, why)
    cut = batches(ctx.datasets[config.dataset_id], handle.input_names, BATCH, config.samples, per_batch_padding=True)
    importance = layer_importance(module, stack, [f for f, _ in cut])
    drop = min(max(1, round(config.ratio * len(stack))), len(stack) - 1)
    dropped = sorted(sorted(range(len(stack)), key=lambda i: importance[i])[:drop])
    kept = [i for i in range(len(stack)) if i not in dropped]
    keep_layers(module.model, name.removeprefix("model."), kept)
    ctx.metrics.update(
        {"importance": importance, "layers_dropped": dropped, "layers_kept": kept, "layers_before": len(stack)}
    )
    return handle.with_torch(module)
