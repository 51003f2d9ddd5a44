"""A decoder-only LLM on a real GPU: a Llama from a transformers config (1 B parameters' shape scaled down to
8 layers of 2048, random weights: speed does not depend on them) in bf16, against the GPU methods int4 and
int8 weight-only and fp8, each generating greedily on its KV cache. Decode tokens/s at batch 1 (memory-bound:
where weight-only int4 pays) and time to first token at a 128-token prompt, with the weights' bytes. Run on
the GPU machine: pytest -m gpu tests/gpu/test_llm_gpu.py -s."""

import json
from pathlib import Path

import pytest
import torch

from tests.pass_runs import apply, parse
from workers.context import PassContext
from workers.evaluation.footprint import weight_memory_bytes
from workers.evaluation.generation import Stepper, generation_speed
from workers.gpu import OnGpu, on_gpu
from workers.runtime import HuggingFaceModule, ModelHandle

pytestmark = pytest.mark.gpu
VOCAB, PROMPT, NEW_TOKENS = 32000, 128, 64
METHODS = {"int4_weight_only": {"group_size": 128}, "int8_weight_only": {}, "fp8": {}}


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> ModelHandle:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=8,
        num_attention_heads=16,
        num_key_value_heads=4,
        max_position_embeddings=1024,
    )
    folder = tmp_path_factory.mktemp("llama-gpu")
    LlamaForCausalLM(config).save_pretrained(str(folder), safe_serialization=True)
    names = ["input_ids", "attention_mask"]
    module = HuggingFaceModule(Path(folder), names)
    return ModelHandle("torch", names, ["logits"], {n: [0, 1] for n in names}, module=module)


def speed(handle: ModelHandle) -> dict:
    return generation_speed(Stepper(handle, 1, "cuda"), PROMPT, 1, NEW_TOKENS, VOCAB, 0)


def test_weight_only_and_fp8_decode_against_bf16(llama: ModelHandle, tmp_path: Path) -> None:
    assert torch.cuda.is_available(), "this test runs on a CUDA machine"
    bf16 = llama.with_torch(OnGpu(on_gpu(llama.module, torch.bfloat16), torch.bfloat16))
    figures = {"bf16": {**speed(bf16), "weight_memory_bytes": weight_memory_bytes(bf16)}}
    for method, settings in METHODS.items():
        ctx = PassContext(workdir=tmp_path, step=0, device="cuda", example={})
        result = apply(parse(type="quantize", method=method, **settings), llama, ctx)
        figures[method] = {**speed(result), "weight_memory_bytes": weight_memory_bytes(result)}
    base = figures["bf16"]
    for row in figures.values():
        assert row["kv_cache"] and row["decode_tokens_per_s"] > 0, row
        row["decode_vs_bf16"] = row["decode_tokens_per_s"] / base["decode_tokens_per_s"]
        row["weights_vs_bf16"] = row["weight_memory_bytes"] / base["weight_memory_bytes"]
    print(json.dumps(figures, indent=1))
    assert figures["int4_weight_only"]["weights_vs_bf16"] < 0.5, "int4 weights take under half bf16's bytes"
    assert figures["int8_weight_only"]["weights_vs_bf16"] < 0.75, "int8 weights take well under bf16's bytes"
