"""A Hugging Face decoder-only LM to ONNX with a KV cache, so the artifact generates token by token with
onnxruntime instead of re-reading the whole sequence at every step.

The graph's inputs are `input_ids` [batch, sequence], `attention_mask` [batch, past + sequence] and, per
layer, `past_key_values.{i}.key` / `.value` [batch, kv_heads, past, head_dim] (past 0 for the prompt); its
outputs `logits` [batch, sequence, vocab] and `present.{i}.key` / `.value`, the cache for the next step (the
names onnxruntime-genai and Optimum use). Position ids are computed inside from the attention mask, so a
left-padded batch generates as the Hugging Face model does."""

from pathlib import Path
from typing import Any

import onnx
import torch

from workers.runtime import HuggingFaceModule, KvCache

EXAMPLE_PAST, EXAMPLE_SEQUENCE = 3, 5
"""the trace's cache and new-token lengths: distinct and above 1, so neither is specialised away"""


def kv_cache_of(config: Any) -> KvCache:
    """The cache shape of a transformers causal-LM config (Llama, Qwen2, Mistral: num_key_value_heads; GPT-2:
    every head)."""
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    return KvCache(config.num_hidden_layers, kv_heads, head_dim)


def is_causal_lm(module: Any) -> bool:
    return isinstance(module, HuggingFaceModule) and module.causal_lm


class WithKvCache(torch.nn.Module):
    """The causal LM taking its cache as flat tensors and returning the logits and the grown cache flat."""

    def __init__(self, module: HuggingFaceModule) -> None:
        super().__init__()
        self.model = module.model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *past: torch.Tensor) -> Any:
        from transformers import DynamicCache

        cache = DynamicCache(ddp_cache_data=list(zip(past[0::2], past[1::2], strict=True)))
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -input_ids.shape[1] :]
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            return_dict=True,
        )
        flat = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
        return (out.logits, *flat)


def example_inputs(cache: KvCache, vocab: int) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (2, EXAMPLE_SEQUENCE), generator=generator)
    mask = torch.ones(2, EXAMPLE_PAST + EXAMPLE_SEQUENCE, dtype=torch.int64)
    past = [torch.randn(2, cache.kv_heads, EXAMPLE_PAST, cache.head_dim, generator=generator) for _ in cache.past()]
    return (ids, mask, *past)


def export_causal_lm(module: HuggingFaceModule, path: Path, opset: int) -> KvCache:
    """Write the KV-cache graph of `module` to `path` (weights inside the file); returns its cache shape."""
    config = module.model.config
    cache = kv_cache_of(config)
    batch, sequence, past = torch.export.Dim("batch"), torch.export.Dim("sequence"), torch.export.Dim("past")
    total = torch.export.Dim("total")
    shapes = (
        {0: batch, 1: sequence},
        {0: batch, 1: total},
        tuple({0: batch, 2: past} for _ in cache.past()),
    )
    previous = config._attn_implementation
    module.model.set_attn_implementation("eager")
    try:
        torch.onnx.export(
            WithKvCache(module).eval(),
            example_inputs(cache, config.vocab_size),
            str(path),
            input_names=["input_ids", "attention_mask", *cache.past()],
            output_names=["logits", *cache.present()],
            opset_version=opset,
            dynamo=True,
            external_data=False,
            dynamic_shapes=shapes,
            verbose=False,
        )
    finally:
        module.model.set_attn_implementation(previous)
    onnx.checker.check_model(str(path))
    return cache
