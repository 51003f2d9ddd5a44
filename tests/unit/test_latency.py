"""The latency protocol: ordered percentiles, every batch size, what ran it, and a model made 4x heavier
measures slower (on onnxruntime and on torch)."""

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from workers.evaluation.latency import latency_stats, measure
from workers.runtime import ModelHandle

WIDTH = 256


def matmul_chain(path: Path, layers: int) -> Path:
    """x[batch, 256] through `layers` MatMul+Relu blocks: compute grows linearly with `layers`."""
    rng = np.random.default_rng(0)
    nodes, inits, current = [], [], "x"
    for i in range(layers):
        inits.append(numpy_helper.from_array(rng.standard_normal((WIDTH, WIDTH)).astype(np.float32) / 16, f"w{i}"))
        nodes += [
            helper.make_node("MatMul", [current, f"w{i}"], [f"m{i}"]),
            helper.make_node("Relu", [f"m{i}"], [f"r{i}"]),
        ]
        current = f"r{i}"
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", WIDTH])],
        [helper.make_tensor_value_info(current, TensorProto.FLOAT, ["b", WIDTH])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def onnx_handle(path: Path) -> ModelHandle:
    out = onnx.load(str(path)).graph.output[0].name
    return ModelHandle("onnx", ["x"], [out], {"x": [0]}, path=path)


def feeds(batch: int) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(1).standard_normal((batch, WIDTH)).astype(np.float32)}


def test_stats_are_ordered_and_throughput_follows_the_median() -> None:
    samples = list(np.random.default_rng(0).lognormal(0, 0.5, 500))
    stats = latency_stats(samples, batch_size=8)
    assert stats["min_ms"] <= stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"]
    assert stats["throughput_per_s"] == pytest.approx(8 * 1000 / np.median(samples)), "not the mean: one slow run"
    assert stats["std_ms"] == pytest.approx(np.std(samples, ddof=1))


def test_onnx_rows_cover_every_batch_size_ordered_with_memory(tmp_path: Path) -> None:
    handle = onnx_handle(matmul_chain(tmp_path / "m.onnx", 2))
    rows = measure(handle, {1: feeds(1), 16: feeds(16)}, runs=40, warmup=3, threads=1)
    assert [r["batch_size"] for r in rows] == [1, 16], "one row per batch size asked, in order"
    for row in rows:
        assert row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"], row
        assert row["runs"] == 40 and row["warmup"] == 3 and row["threads"] == 1
        assert (row["runtime"], row["device"], row["timer"]) == ("onnxruntime", "cpu", "perf_counter")
        assert row["memory_kind"].startswith("rss_high_water"), "process RSS peak (reset per run where Linux allows)"
        assert row["peak_memory_bytes"] >= row["baseline_memory_bytes"] > 0


def test_a_4x_heavier_onnx_model_measures_slower(tmp_path: Path) -> None:
    light = measure(onnx_handle(matmul_chain(tmp_path / "light.onnx", 2)), {64: feeds(64)}, 60, 5, 1)[0]
    heavy = measure(onnx_handle(matmul_chain(tmp_path / "heavy.onnx", 8)), {64: feeds(64)}, 60, 5, 1)[0]
    assert heavy["p50_ms"] > 1.5 * light["p50_ms"], f"4x the MatMuls: {heavy['p50_ms']} vs {light['p50_ms']} ms"
    assert heavy["throughput_per_s"] < light["throughput_per_s"]


def test_a_4x_heavier_torch_model_measures_slower() -> None:
    def mlp(layers: int) -> ModelHandle:
        torch.manual_seed(0)
        module = torch.nn.Sequential(*[torch.nn.Linear(WIDTH, WIDTH) for _ in range(layers)]).eval()
        return ModelHandle("torch", ["x"], ["y"], {"x": [0]}, module=module)

    light = measure(mlp(2), {64: feeds(64)}, 60, 5, 1)[0]
    heavy = measure(mlp(8), {64: feeds(64)}, 60, 5, 1)[0]
    assert light["runtime"] == "torch" and light["device"] == "cpu"
    assert light["p50_ms"] <= light["p90_ms"] <= light["p99_ms"]
    assert heavy["p50_ms"] > 1.5 * light["p50_ms"], f"4x the layers: {heavy['p50_ms']} vs {light['p50_ms']} ms"


def test_cuda_request_without_a_gpu_times_on_the_cpu_and_says_so() -> None:
    module = torch.nn.Linear(WIDTH, 4).eval()
    row = measure(ModelHandle("torch", ["x"], ["y"], {}, module=module), {2: feeds(2)}, 5, 1, 1, device="cuda")[0]
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert row["device"] == expected and row["timer"] == ("cuda_events" if expected == "cuda" else "perf_counter")
