"""Fine-tuning and distillation on CUDA (`ctx.device == "cuda"`), calling the passes directly: structured
pruning of the digits CNN with fine-tuning, then distillation of the pruned student from the original.
Run on a GPU machine with `pytest -m gpu tests/gpu -s`; figures are printed."""

import time
from pathlib import Path

import pytest
import torch

from tests.pass_runs import apply, params, parse
from workers.context import PassContext
from workers.examples import Digits
from workers.runtime import ModelHandle, run

pytestmark = pytest.mark.gpu


def _accuracy(handle: ModelHandle, digits: Digits) -> float:
    return float((run(handle, {"x": digits.x_test})[0].argmax(1) == digits.y_test).mean())


def test_finetune_and_distill_on_cuda(digits_cnn: torch.nn.Module, digits: Digits, tmp_path: Path) -> None:
    assert torch.cuda.is_available(), "this test proves the CUDA path: run it on a GPU machine"
    original = ModelHandle("torch", ["x"], ["logits"], {"x": [0]}, module=digits_cnn, origin="pt2")
    ctx = PassContext(
        workdir=tmp_path,
        step=0,
        device="cuda",
        example={"x": digits.x_test[:4]},
        datasets={"ds_train": {"x": digits.x_train, "labels": digits.y_train}},
        original=original,
    )
    baseline = _accuracy(original, digits)

    t0 = time.perf_counter()
    pruned = apply(
        parse(
            type="prune",
            method="structured",
            ratio=0.3,
            finetune={"dataset_id": "ds_train", "epochs": 3, "batch_size": 64},
        ),
        original,
        ctx,
    )
    prune_s = time.perf_counter() - t0
    assert ctx.metrics["finetune"]["device"] == "cuda"
    assert next(pruned.module.parameters()).device.type == "cpu", "the pass hands back a CPU model"
    pruned_accuracy = _accuracy(pruned, digits)
    assert baseline - pruned_accuracy <= 0.02, f"accuracy {baseline:.4f} -> {pruned_accuracy:.4f}"

    ctx.metrics = {}
    t0 = time.perf_counter()
    student = apply(parse(type="distill", dataset_id="ds_train", epochs=3, lr=1e-3, batch_size=64), pruned, ctx)
    distill_s = time.perf_counter() - t0
    assert ctx.metrics["device"] == "cuda" and ctx.metrics["loss"] == "kl+alpha*ce"
    distilled_accuracy = _accuracy(student, digits)
    assert baseline - distilled_accuracy <= 0.02, f"accuracy {baseline:.4f} -> {distilled_accuracy:.4f}"
    print(
        f"\n{torch.cuda.get_device_name()}: structured 30% + 3 epochs fine-tuning {prune_s:.1f}s, params "
        f"{params(digits_cnn)} -> {params(pruned.module)}, accuracy {baseline:.4f} -> "
        f"{pruned_accuracy:.4f}; distilled 3 epochs {distill_s:.1f}s -> {distilled_accuracy:.4f}, "
        f"losses {ctx.metrics['epoch_losses']}"
    )
