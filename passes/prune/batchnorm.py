"""Batch-norm statistics re-estimated after pruning: zeroed weights or removed channels shift every
activation's mean and variance, and the running statistics a BatchNorm layer learned in training no longer
fit them. A few forward passes over the job's data in train mode (cumulative averages, no gradients, no
weight changes) give them back; this is not a fine-tune, the weights and their zeros stay as pruned.

A model exported to ONNX has its BatchNorms folded into the convolutions before it (torch.onnx's optimizer
does it), so there are no statistics left to reset. Re-estimating a folded BatchNorm is the same as giving
each output channel of that convolution, on the same data, the mean and spread it had before pruning
(a BatchNorm's output has the mean beta and spread |gamma| it was trained to have): `folded` does that,
convolution by convolution in order, by rescaling the channel's weights (zeros stay zeros) and its bias.
After structured pruning the kept channels are found by their weights, so it runs before fine-tuning."""

from typing import Any

import numpy as np
import torch
from torch import nn

from passes.prune.config import BatchNormConfig
from workers.runtime import Feeds, ModelHandle
from workers.training import dataset, forward

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def batch_norms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules() if isinstance(m, BATCH_NORMS) and m.track_running_stats]


def top1(module: nn.Module, data: dict[str, np.ndarray], names: list[str], count: int, batch: int) -> float:
    """Share of the first `count` samples whose argmax is their label."""
    correct = 0
    with torch.no_grad():
        for start in range(0, count, batch):
            rows = slice(start, min(count, start + batch))
            correct += int((forward(module, data, names, rows, "cpu").argmax(1).numpy() == data["labels"][rows]).sum())
    return correct / count


def reestimate(
    module: nn.Module, before: nn.Module, config: BatchNormConfig, handle: ModelHandle, datasets: dict[str, Feeds]
) -> dict[str, Any]:
    """Re-estimate the pruned `module`'s BatchNorm statistics on `config.samples` of the dataset (real
    BatchNorm layers, else the folded ones against `before`, the unpruned model); the module is left in eval
    mode. Returns what the step reports, with top-1 on those samples before and after when they have labels."""
    data = dataset(datasets, config.dataset_id, handle.input_names)
    count = min(config.samples, len(data[handle.input_names[0]]))
    labelled = "labels" in data and data["labels"].ndim == 1
    module.eval()
    accuracy = top1(module, data, handle.input_names, count, config.batch_size) if labelled else None
    rows = [slice(start, min(count, start + config.batch_size)) for start in range(0, count, config.batch_size)]
    layers = batch_norms(module)
    if layers:
        found: dict[str, Any] = {"mode": "batchnorm", "layers": len(layers)}
        reset_running_stats(module, layers, data, handle.input_names, rows)
    else:
        convolutions = matching_convolutions(module, before)
        if not convolutions:
            return {
                "mode": "folded",
                "layers": 0,
                "reason": "no BatchNorm layer, nor convolution whose channels "
                "match the unpruned model's (structured pruning of a folded model)",
            }
        found = {"mode": "folded", "layers": len(convolutions)}
        for name, channels in convolutions.items():
            match_channels(module, before, name, channels, data, handle.input_names, rows)
    found |= {"dataset_id": config.dataset_id, "samples": count}
    if accuracy is not None:
        found["top1_before"] = accuracy
        found["top1_after"] = top1(module, data, handle.input_names, count, config.batch_size)
    return found


def reset_running_stats(
    module: nn.Module, layers: list[nn.modules.batchnorm._BatchNorm], data: Feeds, names: list[str], rows: list[slice]
) -> None:
    """Every BatchNorm's running statistics averaged anew over the rows, in train mode, without gradients."""
    momenta = [m.momentum for m in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # a cumulative average over every batch, not an exponential one
        layer.train()
    with torch.no_grad():
        for index in rows:
            forward(module, data, names, index, "cpu")
    for layer, momentum in zip(layers, momenta, strict=True):
        layer.momentum = momentum
    module.eval()


def matching_convolutions(module: nn.Module, before: nn.Module) -> dict[str, torch.Tensor]:
    """Per convolution (in forward order of a sequential model), which of the unpruned model's output
    channels each of its channels is: all of them in order when the shapes are the same (unstructured), else
    found by comparing weights over the kept input channels (structured, before any fine-tuning). A layer
    whose channels cannot be told is left out, and so is the next one's input mapping."""
    originals = dict(before.named_modules())
    found: dict[str, torch.Tensor] = {}
    previous: torch.Tensor | None = None
    for name, layer in module.named_modules():
        if not isinstance(layer, CONVOLUTIONS) or name not in originals:
            continue
        weight, original = layer.weight.detach(), originals[name].weight.detach()  # type: ignore[union-attr]
        if weight.shape == original.shape:
            previous = found[name] = torch.arange(weight.shape[0])
            continue
        if previous is not None and previous.numel() == weight.shape[1] and original.shape[1] > weight.shape[1]:
            original = original[:, previous]
        previous = None
        if original.shape[1:] != weight.shape[1:]:
            continue
        distance = torch.cdist(weight.flatten(1).double(), original.flatten(1).double())
        index = distance.argmin(1)
        if bool((distance.gather(1, index[:, None]) <= 1e-5 * (1 + original.abs().max())).all()):
            previous = found[name] = index
    return found


def _channel_stats(model: nn.Module, name: str, data: Feeds, names: list[str], rows: list[slice]) -> torch.Tensor:
    """Per output channel of layer `name`: [mean, std] over the rows, positions and samples."""
    layer = dict(model.named_modules())[name]
    outputs: list[torch.Tensor] = []
    hook = layer.register_forward_hook(lambda _m, _i, out: outputs.append(out.detach().transpose(0, 1).flatten(1)))
    try:
        with torch.no_grad():
            for index in rows:
                forward(model, data, names, index, "cpu")
    finally:
        hook.remove()
    values = torch.cat(outputs, dim=1).double()
    return torch.stack([values.mean(1), values.std(1)])


def match_channels(
    module: nn.Module,
    before: nn.Module,
    name: str,
    channels: torch.Tensor,
    data: Feeds,
    names: list[str],
    rows: list[slice],
) -> None:
    """Rescale layer `name`'s output channels in the pruned module to the mean and spread the same channels
    (`channels` of the unpruned layer) had before."""
    target = _channel_stats(before.eval(), name, data, names, rows)[:, channels]
    found = _channel_stats(module, name, data, names, rows)
    scale = torch.where(found[1] > 1e-8, target[1] / found[1].clamp_min(1e-8), torch.ones_like(found[1]))
    layer = dict(module.named_modules())[name]
    with torch.no_grad():
        shape = (-1,) + (1,) * (layer.weight.dim() - 1)  # type: ignore[union-attr]
        layer.weight.mul_(scale.view(shape).to(layer.weight.dtype))  # type: ignore[union-attr, operator]
        bias = layer.bias if layer.bias is not None else 0.0  # type: ignore[union-attr]
        shifted = (bias - found[0]) * scale + target[0]
        if layer.bias is None:
            layer.bias = nn.Parameter(shifted.to(layer.weight.dtype))  # type: ignore[union-attr]
        else:
            layer.bias.copy_(shifted)  # type: ignore[union-attr, operator]
