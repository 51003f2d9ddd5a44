"""Benchmark: a decoder-only LLM, the original beside each weight-only result, on the CPU.

    python -m bench.llm [--model DIR] [--threads 2] [--prompt 32] [--batch 1] [--new-tokens 32]

The model is a Hugging Face causal-LM folder (default: the tiny Llama of tests.llm_models, trained first,
about 90 s). It is exported to ONNX with its KV cache by the convert pass, then quantized by int8_blocks and
int4 (rtn, hqq; blocks of 128, embeddings float) as the quantize pass does. For each: perplexity on
48 held-out documents of the grammar (95% bootstrap interval), the weights' bytes, time to first token and
decode tokens/s on the cache, each against the plain library call (the transformers model in torch).
"""

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from tests.llm_models import evaluation_text, train_llama
from tests.pass_runs import apply, parse
from workers.context import PassContext
from workers.datasets import batches, tokenize
from workers.evaluation.footprint import weight_memory_bytes
from workers.evaluation.generation import Stepper, generation_speed
from workers.evaluation.perplexity import document_losses, perplexity
from workers.runtime import Feeds, HuggingFaceModule, ModelHandle, run

INPUTS = [{"name": "input_ids", "dtype": "int64"}, {"name": "attention_mask", "dtype": "int64"}]
METHODS: dict[str, dict[str, Any]] = {
    "int8_blocks": {"method": "int8_blocks"},
    "int4 rtn": {"method": "int4", "block_size": 128, "embeddings": False},
    "int4 hqq": {"method": "int4", "algorithm": "hqq", "block_size": 128, "embeddings": False},
}


def figures(handle: ModelHandle, evaluation: list[Feeds], args: argparse.Namespace, vocab: int) -> dict[str, Any]:
    logits = [run(handle, feeds)[0] for feeds in evaluation]
    speed = generation_speed(Stepper(handle, args.threads, "cpu"), args.prompt, args.batch, args.new_tokens, vocab, 0)
    return {
        "perplexity": perplexity(document_losses(logits, evaluation), 0),
        "weight_memory_bytes": weight_memory_bytes(handle),
        "time_to_first_token_ms": speed["time_to_first_token_ms"],
        "decode_tokens_per_s": speed["decode_tokens_per_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, help="a Hugging Face causal-LM folder; default: train the tiny Llama")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-llm-"))
    folder = args.model or train_llama(work / "model").folder
    data = tokenize(evaluation_text(work / "held_out.txt").read_text(), INPUTS, folder)
    names = [i["name"] for i in INPUTS]
    evaluation = [f for f, _ in batches(data, names, 8, None, per_batch_padding=True)]
    module = HuggingFaceModule(folder, names)
    vocab = int(module.model.config.vocab_size)
    original = ModelHandle("torch", names, ["logits"], {n: [0, 1] for n in names}, module=module)
    ctx = PassContext(workdir=work, step=0, device="cpu", example=evaluation[0], datasets={"text": data})
    exported = apply(parse(type="convert", to="onnx"), original, ctx)
    rows = {"original (torch)": figures(original, evaluation, args, vocab)}
    rows["fp32 ONNX, KV cache"] = figures(exported, evaluation, args, vocab)
    for index, (name, config) in enumerate(METHODS.items(), start=1):
        step = PassContext(
            workdir=work / str(index), step=index, device="cpu", example=evaluation[0], datasets=ctx.datasets
        )
        step.workdir.mkdir()
        rows[name] = figures(apply(parse(type="quantize", **config), exported, step), evaluation, args, vocab)
    base = rows["original (torch)"]
    header = ("perplexity", 12), ("95% CI", 20), ("change", 9), ("weights", 12), ("x", 6), ("TTFT ms", 9)
    print("\n" + f"{'model':<22}" + "".join(f"{h:>{w}}" for h, w in header) + f"{'tok/s':>8}{'x':>6}")
    for name, row in rows.items():
        p = row["perplexity"]
        print(
            f"{name:<22}{p['perplexity']:>12.4f}{p['ci95']['low']:>10.4f}..{p['ci95']['high']:<8.4f}"
            f"{p['perplexity'] / base['perplexity']['perplexity'] - 1:>+9.2%}{row['weight_memory_bytes']:>12}"
            f"{base['weight_memory_bytes'] / row['weight_memory_bytes']:>6.2f}{row['time_to_first_token_ms']:>9.2f}"
            f"{row['decode_tokens_per_s']:>8.0f}{row['decode_tokens_per_s'] / base['decode_tokens_per_s']:>6.2f}"
        )
    (work / "llm.json").write_text(json.dumps(rows, indent=2))
    print(f"\nfigures in {work / 'llm.json'}; x: ratio against the original in torch (the plain library call)")


if __name__ == "__main__":
    main()
