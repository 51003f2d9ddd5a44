"""compare_latency on real onnxruntime sessions: a model against itself reads "no measurable difference"
with an interval spanning 1; a model made 4x heavier reads slower with an interval that excludes 1; a torch
original beside an ONNX result is also timed as ONNX, and that like-for-like ratio is the headline."""

from pathlib import Path

import numpy as np
import torch

from tests.unit.test_latency import WIDTH, feeds, matmul_chain, onnx_handle
from workers.evaluation.latency import compare_latency, reading, speedup_interval
from workers.runtime import ModelHandle


def test_a_model_against_itself_reads_no_measurable_difference(tmp_path: Path) -> None:
    model = onnx_handle(matmul_chain(tmp_path / "m.onnx", 4))
    found = compare_latency(model, model, {32: feeds(32)}, 60, 5, 1, "cpu", 0, tmp_path)
    (row,) = found.comparisons
    ci = row["speedup_ci95"]
    assert row["reading"] == "no measurable difference", f"the same model read {row['speedup']:.3f} {ci}"
    assert row["like_for_like"] and row["headline"] and row["baseline"] == "original"


def test_a_4x_heavier_model_reads_slower_with_an_interval_excluding_1(tmp_path: Path) -> None:
    light = onnx_handle(matmul_chain(tmp_path / "light.onnx", 2))
    heavy = onnx_handle(matmul_chain(tmp_path / "heavy.onnx", 8))
    (row,) = compare_latency(light, heavy, {64: feeds(64)}, 60, 5, 1, "cpu", 0, tmp_path).comparisons
    assert row["reading"] == "slower", row
    assert row["speedup_ci95"]["high"] < 1.0, f"interval {row['speedup_ci95']} should exclude 1"
    assert row["speedup"] < 0.5, f"4x the MatMuls: x{row['speedup']:.3f}"


def test_rows_carry_throughput_at_the_median_and_the_spread(tmp_path: Path) -> None:
    model = onnx_handle(matmul_chain(tmp_path / "m.onnx", 2))
    found = compare_latency(model, model, {1: feeds(1), 8: feeds(8)}, 40, 3, 1, "cpu", 0, tmp_path)
    assert [r["batch_size"] for r in found.result] == [1, 8]
    for row in found.original + found.result:
        assert row["runs"] == 40, "every model gets all its runs, spread over the rounds"
        assert row["throughput_per_s"] == row["batch_size"] * 1000 / row["p50_ms"]
        assert row["cv"] is not None and row["cv"] >= 0


def test_a_torch_original_is_also_timed_as_onnx_and_that_is_the_headline(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(WIDTH, WIDTH), torch.nn.ReLU()).eval()
    original = ModelHandle("torch", ["x"], ["y"], {"x": [0]}, module=module)
    result = onnx_handle(matmul_chain(tmp_path / "r.onnx", 1))
    found = compare_latency(original, result, {16: feeds(16)}, 20, 2, 1, "cpu", 0, tmp_path)
    assert [r["runtime"] for r in found.original_as_onnx] == ["onnxruntime"], "the exported original, on ORT"
    first, second = found.comparisons
    assert (first["baseline"], first["headline"], first["like_for_like"]) == ("original_as_onnx", True, True)
    assert (second["baseline"], second["headline"], second["like_for_like"]) == ("original", False, False)


def test_the_interval_spans_1_for_two_samples_of_one_distribution() -> None:
    rng = np.random.default_rng(3)
    rounds = [list(rng.lognormal(0, 0.3, 5)) for _ in range(20)]
    other = [list(rng.lognormal(0, 0.3, 5)) for _ in range(20)]
    ratio, low, high = speedup_interval(rounds, other, seed=0)
    assert low <= 1 <= high and reading(ratio, low, high) == "no measurable difference"
