"""CUDA latency on a real GPU: torch on CUDA timed with CUDA events after synchronisation, peak CUDA memory,
ordered percentiles, and a 4x heavier model measuring slower. Run on the GPU machine: pytest -m gpu."""

import json

import numpy as np
import pytest
import torch

from workers.evaluation.latency import measure
from workers.runtime import ModelHandle

pytestmark = pytest.mark.gpu
WIDTH = 1024


def mlp(layers: int) -> ModelHandle:
    torch.manual_seed(0)
    module = torch.nn.Sequential(*[torch.nn.Linear(WIDTH, WIDTH) for _ in range(layers)]).eval()
    return ModelHandle("torch", ["x"], ["y"], {"x": [0]}, module=module)


def test_cuda_latency_with_cuda_events() -> None:
    assert torch.cuda.is_available(), "this test runs on a CUDA machine"
    feeds = {b: {"x": np.random.default_rng(0).standard_normal((b, WIDTH)).astype(np.float32)} for b in (1, 64)}
    light = measure(mlp(2), feeds, runs=200, warmup=20, threads=1, device="cuda")
    heavy = measure(mlp(8), feeds, runs=200, warmup=20, threads=1, device="cuda")
    for row in light + heavy:
        assert (row["runtime"], row["device"], row["timer"]) == ("torch", "cuda", "cuda_events"), row
        assert row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"], row
        assert row["memory_kind"] == "cuda_max_allocated" and row["peak_memory_bytes"] > 0
        assert row["gpu"] == torch.cuda.get_device_name()
    assert heavy[1]["p50_ms"] > 1.5 * light[1]["p50_ms"], "4x the layers at batch 64 measures slower on the GPU"
    assert heavy[1]["peak_memory_bytes"] > light[1]["peak_memory_bytes"], "4x the weights on the GPU"
    print(json.dumps({"light_2_layers": light, "heavy_8_layers": heavy}, indent=1))
