"""A transformer's stack of layers, and a copy keeping some of them: what distillation's `drop_layers`
student and depth pruning both cut."""

from torch import nn

from app.schemas.errors import JobErrorCode
from workers.runtime import PassFailed


def deepest_stack(module: nn.Module, code: JobErrorCode, why: str) -> tuple[str, nn.ModuleList]:
    """The longest ModuleList of identical layers named layer/layers/h (a BERT encoder's, a Llama decoder's,
    GPT-2's); without one the step fails with `code` and `why`, which says what to do instead."""
    stacks = [
        (name, m)
        for name, m in module.named_modules()
        if isinstance(m, nn.ModuleList)
        and len(m) >= 2
        and name.split(".")[-1] in ("layer", "layers", "h")
        and len({type(x) for x in m}) == 1
    ]
    if not stacks:
        raise PassFailed(code, why)
    return max(stacks, key=lambda item: len(item[1]))


def keep_layers(module: nn.Module, name: str, kept: list[int]) -> None:
    """Keep only the layers `kept` of the stack `name` in `module` (in place), renumbering what transformers
    numbers by layer (each attention's layer_idx, for caches and masks) and the configs' layer counts."""
    stack = module.get_submodule(name)
    assert isinstance(stack, nn.ModuleList)  # named by deepest_stack
    parent_name, _, attr = name.rpartition(".")
    layers = [stack[i] for i in kept]
    setattr(module.get_submodule(parent_name) if parent_name else module, attr, nn.ModuleList(layers))
    for sub in module.modules():
        config = getattr(sub, "config", None)
        if config is not None and hasattr(config, "num_hidden_layers"):
            config.num_hidden_layers = len(kept)
            if getattr(config, "layer_types", None):
                config.layer_types = [config.layer_types[i] for i in kept]
    for position, layer in enumerate(layers):
        for sub in layer.modules():
            if hasattr(sub, "layer_idx"):
                sub.layer_idx = position  # type: ignore[assignment]
