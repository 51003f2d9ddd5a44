"""fp16 and bf16 on PyTorch for the GPU: the quantize pass's torch form on a real CUDA device, its outputs
against fp32 and its CUDA-event latency and memory at a batch where half precision pays. Run on the GPU
machine: pytest -m gpu."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.pass_runs import apply, parse
from workers.context import PassContext
from workers.evaluation.fidelity import fidelity
from workers.evaluation.latency import measure
from workers.runtime import ModelHandle, run

pytestmark = pytest.mark.gpu
WIDTH = 2048


def test_half_precision_on_cuda(tmp_path: Path) -> None:
    assert torch.cuda.is_available(), "this test runs on a CUDA machine"
    torch.manual_seed(0)
    layers = [m for _ in range(6) for m in (torch.nn.Linear(WIDTH, WIDTH), torch.nn.GELU())]
    fp32 = ModelHandle("torch", ["x"], ["y"], {"x": [0]}, module=torch.nn.Sequential(*layers).eval())
    rng = np.random.default_rng(0)
    batch = {"x": rng.standard_normal((256, WIDTH)).astype(np.float32)}
    reference = [run(fp32, batch)]
    timings = {"fp32": measure(fp32, {256: batch}, runs=100, warmup=10, threads=1, device="cuda")[0]}
    for method in ("fp16", "bf16"):
        config = parse(type="quantize", method=method, representation="torch")
        ctx = PassContext(workdir=tmp_path, step=0, device="cuda", example=batch)
        half = apply(config, fp32, ctx)
        close = fidelity(["y"], reference, [run(half, batch)])
        assert close["cosine_min"] > 0.99, f"{method} drifted from fp32: {close}"
        timings[method] = measure(half, {256: batch}, runs=100, warmup=10, threads=1, device="cuda")[0]
        assert timings[method]["p50_ms"] < timings["fp32"]["p50_ms"], f"{method} is no faster than fp32 on the GPU"
        assert timings[method]["peak_memory_bytes"] < timings["fp32"]["peak_memory_bytes"]
    print(
        json.dumps(
            {
                k: {f: v[f] for f in ("p50_ms", "p99_ms", "throughput_per_s", "peak_memory_bytes", "gpu")}
                for k, v in timings.items()
            },
            indent=1,
        )
    )
