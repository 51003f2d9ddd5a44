"""Benchmark: the GPU passes (fp8, 2:4, weight-only int8/int4) on a BERT-like encoder against the plain bf16
model, on CUDA.

    python -m bench.gpu_methods [--layers 12] [--hidden 1024] [--seq 512] [--batch 32] [--runs 50] [--no-batch1]

A BertModel from a transformers config (random initialisation: speed does not depend on the weights),
sequence `--seq`. At `--batch`: bf16 (the plain library call: `model.to(torch.bfloat16)`), quantize fp8
(dynamic per-row scales, and static per-tensor activation scales calibrated on two sequences) and prune
semi_structured_2_4 (bf16 on cuSPARSELt; fp8 on torchao's CUTLASS kernel), each timed with CUDA events
eager and under torch.compile (compile time printed apart), with the speedup over bf16, peak CUDA memory and
the cosine of the outputs to fp32. At batch 1: bf16, int8 and int4 weight-only, with the weights' bytes on
the GPU against bf16. Needs a CUDA GPU.
"""

import argparse
import json
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np
import torch
from transformers import BertConfig, BertModel

from tests.pass_runs import apply, parse
from workers.context import PassContext
from workers.evaluation.fidelity import fidelity
from workers.evaluation.footprint import torch_weights
from workers.evaluation.latency import measure, measure_compiled
from workers.gpu import OnGpu, on_gpu
from workers.runtime import ModelHandle, run


class Encoder(torch.nn.Module):
    def __init__(self, model: BertModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def encoder(layers: int, hidden: int) -> ModelHandle:
    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        intermediate_size=4 * hidden,
        max_position_embeddings=512,
    )
    module = Encoder(BertModel(config, add_pooling_layer=False)).eval()
    names = ["input_ids", "attention_mask"]
    return ModelHandle("torch", names, ["last_hidden_state"], {n: [0, 1] for n in names}, module=module)


def feeds(batch: int, seq: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "input_ids": rng.integers(1000, 20000, (batch, seq)).astype(np.int64),
        "attention_mask": np.ones((batch, seq), dtype=np.int64),
    }


def timed(handle: ModelHandle, batch: dict[str, np.ndarray], runs: int) -> dict[str, Any]:
    size = len(batch["input_ids"])
    eager = measure(handle, {size: batch}, runs=runs, warmup=5, threads=1, device="cuda")[0]
    compiled = measure_compiled(handle, {size: batch}, runs=runs, warmup=5, threads=1)
    row = {"eager_p50_ms": eager["p50_ms"], "peak_memory_bytes": eager["peak_memory_bytes"]}
    if compiled:
        row |= {"compiled_p50_ms": compiled[0]["p50_ms"], "compile_seconds": compiled[0]["compile_seconds"]}
    return row


def cosine(handle: ModelHandle, reference: list[np.ndarray], batch: dict[str, np.ndarray]) -> float:
    return float(fidelity(["y"], [reference], [run(handle, batch)])["cosine_mean"])


def speed_rows(fp32: ModelHandle, args: argparse.Namespace, workdir: Path) -> dict[str, dict[str, Any]]:
    batch = feeds(args.batch, args.seq)
    small = {n: a[:2] for n, a in batch.items()}
    reference = run(fp32, small)
    bf16 = fp32.with_torch(OnGpu(on_gpu(fp32.module, torch.bfloat16), torch.bfloat16))
    rows = {"bf16": {**timed(bf16, batch, args.runs), "cosine_to_fp32": cosine(bf16, reference, small)}}
    ctx = PassContext(workdir=workdir, step=0, device="cuda", example=small)
    for label, config in (
        ("fp8", parse(type="quantize", method="fp8")),
        ("fp8 static", parse(type="quantize", method="fp8", activations="static", scaling="per_tensor")),
        ("2:4", parse(type="prune", method="semi_structured_2_4")),
        ("2:4 fp8", parse(type="prune", method="semi_structured_2_4", dtype="fp8")),
    ):
        result = apply(config, fp32, ctx)
        rows[label] = {**timed(result, batch, args.runs), "cosine_to_fp32": cosine(result, reference, small)}
        del result
        torch.cuda.empty_cache()
    return rows


def batch1_rows(fp32: ModelHandle, args: argparse.Namespace, workdir: Path) -> dict[str, dict[str, Any]]:
    batch = feeds(1, args.seq_batch1)
    reference = run(fp32, batch)
    ctx = PassContext(workdir=workdir, step=0, device="cuda", example=batch)
    rows = {}
    for label, result in (
        ("bf16", fp32.with_torch(OnGpu(on_gpu(fp32.module, torch.bfloat16), torch.bfloat16))),
        ("int8_weight_only", apply(parse(type="quantize", method="int8_weight_only"), fp32, ctx)),
        ("int4_weight_only", apply(parse(type="quantize", method="int4_weight_only"), fp32, ctx)),
    ):
        rows[label] = {
            **timed(result, batch, args.runs),
            "weight_bytes": torch_weights(result.module)["memory_bytes"],
            "cosine_to_fp32": cosine(result, reference, batch),
        }
    return rows


def ratios(rows: dict[str, dict[str, Any]]) -> None:
    base = rows["bf16"]
    for row in rows.values():
        row["speedup_eager"] = base["eager_p50_ms"] / row["eager_p50_ms"]
        if "compiled_p50_ms" in row and "compiled_p50_ms" in base:
            row["speedup_compiled"] = base["compiled_p50_ms"] / row["compiled_p50_ms"]
        if "weight_bytes" in row:
            row["weight_bytes_ratio_to_bf16"] = base["weight_bytes"] / row["weight_bytes"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq-batch1", type=int, default=128, help="sequence length of the batch-1 rows")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--no-batch1", action="store_true", help="leave out the weight-only rows at batch 1")
    args = parser.parse_args()
    fp32 = encoder(args.layers, args.hidden)
    started = time.perf_counter()
    with TemporaryDirectory() as tmp:
        speed = speed_rows(fp32, args, Path(tmp))
        weight_only = {} if args.no_batch1 else batch1_rows(fp32, args, Path(tmp))
    ratios(speed)
    if weight_only:
        ratios(weight_only)
    speed["2:4 fp8"]["speedup_compiled_over_fp8_static"] = speed["fp8 static"].get(
        "compiled_p50_ms", float("nan")
    ) / speed["2:4 fp8"].get("compiled_p50_ms", float("nan"))
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, BERT {args.layers}x{args.hidden}")
    print(
        json.dumps(
            {f"batch {args.batch} x seq {args.seq}": speed, f"batch 1 x seq {args.seq_batch1}": weight_only}, indent=1
        )
    )
    for label, row in speed.items():
        print(
            f"{label:>10} eager {row['eager_p50_ms']:.2f} ms ({row['speedup_eager']:.2f}x), compiled "
            f"{row.get('compiled_p50_ms', float('nan')):.2f} ms ({row.get('speedup_compiled', float('nan')):.2f}x), "
            f"cosine {row['cosine_to_fp32']:.4f}"
        )
    for label, row in weight_only.items():
        print(
            f"{label:>16} batch 1 eager {row['eager_p50_ms']:.2f} ms, compiled {row.get('compiled_p50_ms', 0):.2f} "
            f"ms, weights {row['weight_bytes'] / 2**20:.0f} MiB ({row['weight_bytes_ratio_to_bf16']:.2f}x smaller)"
        )
    print(f"2:4 fp8 over dense fp8 static, compiled: {speed['2:4 fp8']['speedup_compiled_over_fp8_static']:.2f}x")
    print(f"wall {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
