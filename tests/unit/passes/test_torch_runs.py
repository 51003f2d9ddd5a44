"""The PyTorch-side passes run directly (no server): ONNX -> torch conversion, pruning, low-rank
factorization, fine-tuning and distillation on the trained digits CNN, and the exports back out."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from tests.pass_runs import apply, params, parse
from workers.context import PassContext
from workers.conversion.onnx_to_torch import ConversionUnsupported, onnx_to_torch
from workers.examples import Digits
from workers.runtime import ModelHandle, PassFailed, run

TRAIN = "ds_train"


def _accuracy(handle: ModelHandle, digits: Digits) -> float:
    logits = run(handle, {"x": digits.x_test})[0]
    return float((logits.argmax(1) == digits.y_test).mean())


@pytest.fixture(scope="module")
def onnx_handle(digits_cnn_onnx: Path) -> ModelHandle:
    return ModelHandle("onnx", ["x"], ["logits"], {"x": [0]}, path=digits_cnn_onnx)


@pytest.fixture()
def ctx(tmp_path: Path, digits: Digits, onnx_handle: ModelHandle) -> PassContext:
    datasets = {
        TRAIN: {"x": digits.x_train, "labels": digits.y_train},
        "ds_unlabelled": {"x": digits.x_train[:256]},
    }
    return PassContext(
        workdir=tmp_path,
        step=0,
        device="cpu",
        example={"x": digits.x_test[:4]},
        datasets=datasets,
        original=onnx_handle,
    )


@pytest.fixture(scope="module")
def torch_handle(onnx_handle: ModelHandle, tmp_path_factory: pytest.TempPathFactory, digits: Digits) -> ModelHandle:
    ctx = PassContext(
        workdir=tmp_path_factory.mktemp("convert"), step=0, device="cpu", example={"x": digits.x_test[:4]}
    )
    return apply(parse(type="convert", to="torch"), onnx_handle, ctx)


def test_onnx_to_torch_holds_real_layers_and_matches(
    onnx_handle: ModelHandle, torch_handle: ModelHandle, digits: Digits
) -> None:
    kinds = sorted({type(m).__name__ for m in torch_handle.module.layers.values()})
    assert kinds == ["Conv2d", "Linear"], f"the converted CNN's weights are not in real layers: {kinds}"
    expected = run(onnx_handle, {"x": digits.x_test})[0]
    got = run(torch_handle, {"x": digits.x_test})[0]
    assert np.abs(expected - got).max() < 1e-4, "the converted model computes something else than the ONNX one"


def test_unsupported_operator_is_named(tmp_path: Path) -> None:
    node = helper.make_node("NonMaxSuppression", ["boxes", "scores"], ["selected"])
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 4, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, 4]),
        ],
        [helper.make_tensor_value_info("selected", TensorProto.INT64, [None, 3])],
    )
    example = {"boxes": np.zeros((1, 4, 4), np.float32), "scores": np.zeros((1, 1, 4), np.float32)}
    with pytest.raises(ConversionUnsupported) as info:
        onnx_to_torch(helper.make_model(graph), example)
    assert info.value.ops == ["NonMaxSuppression"]
    path = tmp_path / "nms.onnx"
    onnx.save(helper.make_model(graph), str(path))
    handle = ModelHandle("onnx", ["boxes", "scores"], ["selected"], {}, path=path)
    ctx = PassContext(workdir=tmp_path, step=0, device="cpu", example=example)
    with pytest.raises(PassFailed) as failed:
        apply(parse(type="convert", to="torch"), handle, ctx)
    assert failed.value.code == "conversion_unsupported" and "NonMaxSuppression" in failed.value.message


def test_magnitude_pruning_reaches_sparsity_and_compresses(
    torch_handle: ModelHandle, ctx: PassContext, digits: Digits
) -> None:
    config = parse(type="prune", method="magnitude", sparsity=0.7)
    pruned = apply(config, torch_handle, ctx)
    weights = [p for n, p in pruned.module.named_parameters() if p.dim() >= 2]
    zero = sum(int((p == 0).sum()) for p in weights) / sum(p.numel() for p in weights)
    assert zero == pytest.approx(0.7, abs=0.01), f"weight sparsity {zero}"
    assert ctx.metrics["weights_zstd_bytes"] < 0.6 * ctx.metrics["weights_bytes"], ctx.metrics
    assert _accuracy(torch_handle, digits) == pytest.approx(_accuracy(ctx.original, digits)), "the input is untouched"


def test_threshold_pruning_keeps_sparsity_through_finetuning(torch_handle: ModelHandle, ctx: PassContext) -> None:
    config = parse(
        type="prune",
        method="threshold",
        threshold=0.02,
        finetune={"dataset_id": "ds_unlabelled", "epochs": 1, "batch_size": 64},
    )
    pruned = apply(config, torch_handle, ctx)
    for name, p in pruned.module.named_parameters():
        if p.dim() >= 2:
            before = dict(torch_handle.module.named_parameters())[name]
            assert bool((p[before.abs() < 0.02] == 0).all()), f"{name}: pruned weights grew back in training"
    assert ctx.metrics["finetune"]["loss"] == "mse_to_input_model"


def test_structured_pruning_shrinks_and_finetunes(torch_handle: ModelHandle, ctx: PassContext, digits: Digits) -> None:
    config = parse(
        type="prune",
        method="structured",
        ratio=0.3,
        finetune={"dataset_id": TRAIN, "epochs": 2, "batch_size": 64},
    )
    pruned = apply(config, torch_handle, ctx)
    before, after = params(torch_handle.module), params(pruned.module)
    assert after <= 0.75 * before, f"parameters {before} -> {after}"
    assert pruned.module(torch.zeros(3, 1, 8, 8)).shape == (3, 10), "the classifier keeps its 10 outputs"
    drop = _accuracy(ctx.original, digits) - _accuracy(pruned, digits)
    assert drop <= 0.02, f"accuracy dropped {drop:.3f}"
    exported = apply(parse(type="convert"), pruned, ctx)
    assert _accuracy(exported, digits) == pytest.approx(_accuracy(pruned, digits), abs=0.003)
    assert ort.InferenceSession(str(exported.path)).get_inputs()[0].shape[0] != 3, "the batch stays dynamic"


def test_taylor_importance_uses_the_finetune_data(torch_handle: ModelHandle, ctx: PassContext) -> None:
    with pytest.raises(ValueError, match="taylor"):
        parse(type="prune", method="structured", ratio=0.3, importance="taylor")
    config = parse(
        type="prune",
        method="structured",
        ratio=0.3,
        importance="taylor",
        finetune={"dataset_id": TRAIN, "epochs": 1, "batch_size": 128},
    )
    pruned = apply(config, torch_handle, ctx)
    assert params(pruned.module) <= 0.75 * params(torch_handle.module)
    assert all(p.grad is None for p in pruned.module.parameters()), "no gradients left on the result"


def test_tucker_with_finetuning(torch_handle: ModelHandle, ctx: PassContext, digits: Digits) -> None:
    config = parse(
        type="lowrank",
        method="tucker",
        rank_ratio=0.5,
        finetune={"dataset_id": TRAIN, "epochs": 1, "batch_size": 64},
    )
    factorized = apply(config, torch_handle, ctx)
    assert sorted(ctx.metrics["factorized"]) == ["layers.l_3", "layers.l_7"], ctx.metrics
    assert ctx.metrics["skipped_no_gain"] == ["layers.l_0"], "a 1-channel conv is not worth factorizing"
    assert params(factorized.module) < params(torch_handle.module)
    assert _accuracy(ctx.original, digits) - _accuracy(factorized, digits) <= 0.03


def test_svd_energy_and_ratio(torch_handle: ModelHandle, ctx: PassContext, digits: Digits) -> None:
    apply(parse(type="lowrank", method="svd", energy=0.9), torch_handle, ctx)
    ranks = {name: f["rank"] for name, f in ctx.metrics["factorized"].items()}
    assert "layers.l_12" in ranks and ranks["layers.l_12"] < 128, ctx.metrics
    with pytest.raises(ValueError, match="exactly one"):
        parse(type="lowrank", method="svd")


def test_distill_cnn_with_labels(torch_handle: ModelHandle, ctx: PassContext, digits: Digits) -> None:
    pruned = apply(parse(type="prune", method="structured", ratio=0.5), torch_handle, ctx)
    ctx.metrics = {}
    student = apply(parse(type="distill", dataset_id=TRAIN, epochs=2, lr=2e-3, batch_size=64), pruned, ctx)
    assert ctx.metrics["loss"] == "kl+alpha*ce"
    assert ctx.metrics["epoch_losses"][-1] < ctx.metrics["epoch_losses"][0]
    assert _accuracy(student, digits) >= _accuracy(ctx.original, digits) - 0.02


@pytest.mark.parametrize("to", ["pt2", "torchscript"])
def test_torch_artifacts_roundtrip(torch_handle: ModelHandle, ctx: PassContext, digits: Digits, to: str) -> None:
    exported = apply(parse(type="convert", to=to), torch_handle, ctx)
    assert exported.path is not None and exported.path.exists()
    expected = run(torch_handle, {"x": digits.x_test[:7]})[0]
    assert np.abs(run(exported, {"x": digits.x_test[:7]})[0] - expected).max() < 1e-4, "batch 7 (not traced)"
