"""Size, parameters, sparsity and compute per sample: the ONNX graph count equals the analytical count and
torch's own FlopCounterMode on the digits CNN."""

from pathlib import Path

import numpy as np
import onnx
import torch

from workers.evaluation.footprint import onnx_compute, onnx_weights, torch_compute, torch_weights

# Conv: out positions x out channels x (in channels x 3 x 3); Linear: in x out.
DIGITS_CNN_MACS = (8 * 8 * 32 * 1 * 9) + (8 * 8 * 64 * 32 * 9) + (4 * 4 * 64 * 64 * 9) + 256 * 128 + 128 * 10


def test_onnx_macs_of_the_digits_cnn_equal_the_analytical_count(digits_cnn_onnx: Path) -> None:
    at_batch_4 = onnx_compute(digits_cnn_onnx, {"x": [4, 1, 8, 8]})
    assert at_batch_4["macs_per_sample"] == DIGITS_CNN_MACS, "per sample: the batch is divided out"
    assert at_batch_4["flops_per_sample"] > 2 * DIGITS_CNN_MACS, "bias adds, ReLU and pooling come on top"
    assert at_batch_4["uncounted_ops"] == [], "every op of the CNN has known shapes"
    assert onnx_compute(digits_cnn_onnx, {"x": [1, 1, 8, 8]})["macs_per_sample"] == DIGITS_CNN_MACS


def test_torch_flop_counter_agrees_with_the_onnx_count(digits_cnn: torch.nn.Module) -> None:
    x = np.zeros((2, 1, 8, 8), dtype=np.float32)
    counted = torch_compute(digits_cnn, {"x": x}, ["x"])
    assert counted["macs_per_sample"] == DIGITS_CNN_MACS


def test_params_size_and_sparsity(digits_cnn: torch.nn.Module, digits_cnn_onnx: Path, tmp_path: Path) -> None:
    torch_params = sum(p.numel() for p in digits_cnn.parameters())
    weights = onnx_weights(digits_cnn_onnx)
    assert weights["size_bytes"] == digits_cnn_onnx.stat().st_size
    model = onnx.load(str(digits_cnn_onnx))
    assert weights["param_count"] == sum(int(np.prod(i.dims)) for i in model.graph.initializer)
    assert abs(weights["param_count"] - torch_params) < 0.01 * torch_params, "the exporter folds BatchNorm only"
    assert weights["sparsity"] == 0.0

    target = max((i for i in model.graph.initializer if len(i.dims) >= 2), key=lambda i: int(np.prod(i.dims)))
    array = onnx.numpy_helper.to_array(target).copy()
    array.reshape(-1)[: array.size // 2] = 0
    target.CopyFrom(onnx.numpy_helper.from_array(array, target.name))
    pruned = tmp_path / "pruned.onnx"
    onnx.save(model, str(pruned))
    total = sum(int(np.prod(i.dims)) for i in model.graph.initializer if len(i.dims) >= 2)
    zeros = sum(int((onnx.numpy_helper.to_array(i) == 0).sum()) for i in model.graph.initializer if len(i.dims) >= 2)
    assert onnx_weights(pruned)["sparsity"] == zeros / total and zeros >= array.size // 2

    linear = torch.nn.Linear(10, 10, bias=False)
    with torch.no_grad():
        linear.weight[:, :3] = 0
    assert torch_weights(linear)["sparsity"] == 0.3 and torch_weights(linear)["param_count"] == 100


def test_optimized_and_quantized_graphs_count_the_same_macs(digits_cnn_onnx: Path, tmp_path: Path) -> None:
    """onnxruntime's optimizer writes fused contrib ops (FusedConv, FusedGemm) and quantization writes
    integer ops: the compute per sample is the same work, so the count must not drop to 0."""
    import onnxruntime as ort
    from onnxruntime.quantization import quantize_dynamic

    shapes = {"x": [4, 1, 8, 8]}
    expected = onnx_compute(digits_cnn_onnx, shapes)["macs_per_sample"]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(digits_cnn_onnx), options, providers=["CPUExecutionProvider"])
    quantize_dynamic(str(tmp_path / "optimized.onnx"), str(tmp_path / "int8.onnx"))
    for name in ("optimized.onnx", "int8.onnx"):
        counted = onnx_compute(tmp_path / name, shapes)
        assert counted["macs_per_sample"] == expected, f"{name}: {counted}"
