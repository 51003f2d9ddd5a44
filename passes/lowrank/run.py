"""lowrank: replace weights by products of thin factors.

svd: a Linear [out, in] becomes Linear(in, r) then Linear(r, out), from the truncated SVD (rank by ratio of
the full rank, or by the share of squared singular values kept). tucker: a Conv2d becomes a 1x1 conv to
R_in channels, the k x k core conv to R_out channels, and a 1x1 conv back (Tucker-2 on the channel modes,
tensorly). A layer whose factors would hold as many parameters as it does is left as it is.
"""

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from app.schemas.errors import JobErrorCode
from passes.lowrank.config import Config, Svd, Tucker
from workers.context import PassContext
from workers.runtime import ModelHandle, PassFailed
from workers.training import Finetuner


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, attr, new)


def _svd_rank(s: torch.Tensor, config: Svd) -> int:
    if config.energy is not None:
        energy = torch.cumsum(s.double() ** 2, 0) / (s.double() ** 2).sum()
        return int(torch.searchsorted(energy, torch.tensor(config.energy, dtype=torch.float64)).item()) + 1
    assert config.rank_ratio is not None  # the config holds exactly one of energy and rank_ratio
    return max(1, round(config.rank_ratio * s.numel()))


def factorize_linear(layer: nn.Linear, config: Svd) -> tuple[nn.Module, int] | None:
    """Two Linear layers from the truncated SVD of `layer`, or None when they would not be smaller."""
    weight = layer.weight.detach().double()
    u, s, vh = torch.linalg.svd(weight, full_matrices=False)
    rank = _svd_rank(s, config)
    if rank * (layer.in_features + layer.out_features) >= layer.in_features * layer.out_features:
        return None
    root = s[:rank].sqrt()
    first = nn.Linear(layer.in_features, rank, bias=False)
    second = nn.Linear(rank, layer.out_features, bias=layer.bias is not None)
    with torch.no_grad():
        first.weight.copy_((root[:, None] * vh[:rank]).float())
        second.weight.copy_((u[:, :rank] * root[None, :]).float())
        if layer.bias is not None:
            second.bias.copy_(layer.bias.detach())  # type: ignore[union-attr]
    return nn.Sequential(first, second), rank


def factorize_conv(layer: nn.Conv2d, config: Tucker) -> tuple[nn.Module, list[int]] | None:
    """1x1 -> k x k core -> 1x1 convs from a Tucker-2 decomposition, or None when they would not be
    smaller."""
    from tensorly.decomposition import partial_tucker

    if layer.groups != 1 or isinstance(layer.padding, str):
        return None
    out_c, in_c, kh, kw = layer.weight.shape
    ratio = config.rank_ratio
    r_out, r_in = max(1, round(ratio * out_c)), max(1, round(ratio * in_c))
    if in_c * r_in + r_in * r_out * kh * kw + r_out * out_c >= out_c * in_c * kh * kw:
        return None
    weight = layer.weight.detach().double().numpy()
    (core, (u_out, u_in)), _ = partial_tucker(
        weight, rank=[r_out, r_in], modes=[0, 1], init="svd", n_iter_max=50, random_state=0
    )
    first = nn.Conv2d(in_c, r_in, 1, bias=False)
    padding = layer.padding
    assert not isinstance(padding, str)  # refused above
    middle = nn.Conv2d(
        r_in,
        r_out,
        (kh, kw),
        stride=(layer.stride[0], layer.stride[1]),
        padding=(padding[0], padding[1]),
        dilation=(layer.dilation[0], layer.dilation[1]),
        bias=False,
    )
    last = nn.Conv2d(r_out, out_c, 1, bias=layer.bias is not None)
    with torch.no_grad():
        first.weight.copy_(torch.from_numpy(np.ascontiguousarray(u_in.T)[:, :, None, None]).float())
        middle.weight.copy_(torch.from_numpy(np.ascontiguousarray(core)).float())
        last.weight.copy_(torch.from_numpy(np.ascontiguousarray(u_out)[:, :, None, None]).float())
        if layer.bias is not None:
            last.bias.copy_(layer.bias.detach())  # type: ignore[union-attr]
    return nn.Sequential(first, middle, last), [r_out, r_in]


def factorize(layer: nn.Module, config: Config) -> tuple[nn.Module, Any] | None:
    """The layer's factors and their rank(s), or None when they would not be smaller."""
    if isinstance(config, Svd) and isinstance(layer, nn.Linear):
        return factorize_linear(layer, config)
    if isinstance(config, Tucker) and isinstance(layer, nn.Conv2d):
        return factorize_conv(layer, config)
    return None


def run(config: Config, handle: ModelHandle, ctx: PassContext) -> ModelHandle:
    finetuner = Finetuner(config.finetune, handle, ctx.datasets, ctx.device)
    module = copy.deepcopy(handle.module).eval()
    kind: type[nn.Module] = nn.Linear if isinstance(config, Svd) else nn.Conv2d
    layers = [(name, m) for name, m in module.named_modules() if type(m) is kind]
    if not layers:
        raise PassFailed(
            JobErrorCode.lowrank_unsupported,
            f"method {config.method!r} factorizes {kind.__name__} layers and the model has none",
        )
    factorized: dict[str, Any] = {}
    skipped = []
    for name, layer in layers:
        made = factorize(layer, config)
        if made is None:
            skipped.append(name)
            continue
        _replace(module, name, made[0])
        factorized[name] = {
            "rank": made[1],
            "params_before": sum(p.numel() for p in layer.parameters()),
            "params_after": sum(p.numel() for p in made[0].parameters()),
        }
    ctx.metrics.update({"factorized": factorized, "skipped_no_gain": skipped})
    finetuned = finetuner.run(module)
    if finetuned:
        ctx.metrics["finetune"] = finetuned
    return handle.with_torch(module)
