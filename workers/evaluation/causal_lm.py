"""The report's section for a decoder-only LLM: perplexity of the original and the result on the evaluation
text and its change, weight memory, time to first token and decode tokens/s, and greedy samples from fixed
prompts, original beside result. Perplexity comes from the logits the pipeline computed on the evaluation
batches; generation runs each model once more, on the job's device."""

from typing import Any

import numpy as np

from app.schemas.jobs import GenerationSpec
from workers.evaluation.footprint import weight_memory_bytes
from workers.evaluation.generation import Stepper, agreement, generation_speed, greedy
from workers.evaluation.perplexity import DocumentLosses, document_losses, perplexity, perplexity_change
from workers.runtime import Feeds, HuggingFaceModule, ModelHandle

DEFAULT_PROMPTS, PROMPT_TOKENS = 8, 8
"""without prompts in the spec: the first PROMPT_TOKENS tokens of the first DEFAULT_PROMPTS documents"""


def is_causal_lm(handle: ModelHandle) -> bool:
    return isinstance(handle.module, HuggingFaceModule) and handle.module.causal_lm


def losses_of(outputs: list[list[np.ndarray]], batches: list[Feeds]) -> DocumentLosses:
    return document_losses([b[0] for b in outputs], batches)


def prompt_ids(spec: GenerationSpec, tokenizer: Any, batches: list[Feeds]) -> list[list[int]]:
    if spec.prompts:
        return [list(tokenizer(p)["input_ids"]) for p in spec.prompts]
    rows: list[list[int]] = []
    for feeds in batches:
        mask = feeds.get("attention_mask", np.ones_like(feeds["input_ids"]))
        rows += [
            [int(t) for t, m in zip(ids, keep, strict=True) if m][:PROMPT_TOKENS]
            for ids, keep in zip(feeds["input_ids"], mask, strict=True)
        ]
    return [r for r in rows if r][:DEFAULT_PROMPTS]


def figures(
    handle: ModelHandle, stepper: Stepper, losses: DocumentLosses | None, spec: GenerationSpec, vocab: int, seed: int
) -> dict[str, Any]:
    return {
        "perplexity": perplexity(losses, seed) if losses is not None else None,
        "weight_memory_bytes": weight_memory_bytes(handle),
        "generation": generation_speed(stepper, spec.prompt_length, spec.batch_size, spec.new_tokens, vocab, seed),
    }


def causal_lm_section(
    original: ModelHandle,
    result: ModelHandle,
    losses: tuple[DocumentLosses, DocumentLosses] | None,
    batches: list[Feeds],
    spec: GenerationSpec,
    threads: int,
    device: str,
    seed: int,
) -> dict[str, Any]:
    """Original beside result; `losses` (original's, result's) when the evaluation set is text."""
    from transformers import AutoTokenizer

    module = original.module
    tokenizer = AutoTokenizer.from_pretrained(str(module.root), local_files_only=True, trust_remote_code=False)
    vocab = int(module.model.config.vocab_size)
    before, after = Stepper(original, threads, device), Stepper(result, threads, device)
    prompts = prompt_ids(spec, tokenizer, batches)
    said = [greedy(before, p, spec.new_tokens) for p in prompts]
    heard = [greedy(after, p, spec.new_tokens) for p in prompts]
    return {
        "original": figures(original, before, losses[0] if losses else None, spec, vocab, seed),
        "result": figures(result, after, losses[1] if losses else None, spec, vocab, seed),
        "perplexity_change": perplexity_change(*losses, seed) if losses else None,
        "greedy_agreement": agreement(said, heard, spec.new_tokens),
        "samples": [
            {
                "prompt": tokenizer.decode(p),
                "original": tokenizer.decode(a),
                "result": tokenizer.decode(b),
                "identical_first_tokens": a == b,
            }
            for p, a, b in zip(prompts, said, heard, strict=True)
        ],
    }
