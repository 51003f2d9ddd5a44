"""Batch-norm re-estimation after pruning, run directly on the trained digits CNN as a torch module with its
real BatchNorm layers (the e2e test covers the folded ones of an ONNX upload): at 50% structured pruning,
where the stale statistics cost the most, the held-out accuracy comes back without training."""

from pathlib import Path

import torch

from tests.pass_runs import apply, parse
from workers.context import PassContext
from workers.examples import Digits
from workers.runtime import ModelHandle, run


def _accuracy(handle: ModelHandle, digits: Digits) -> float:
    return float((run(handle, {"x": digits.x_test})[0].argmax(1) == digits.y_test).mean())


def test_structured_pruning_with_real_batchnorms(tmp_path: Path, digits: Digits, digits_cnn: torch.nn.Module) -> None:
    handle = ModelHandle("torch", ["x"], ["logits"], {"x": [0]}, module=digits_cnn)
    found: dict[str, tuple[float, dict]] = {}
    for name, extra in (("plain", {}), ("batchnorm", {"batchnorm": {"dataset_id": "ds_train"}})):
        ctx = PassContext(
            workdir=tmp_path,
            step=0,
            device="cpu",
            example={"x": digits.x_test[:4]},
            datasets={"ds_train": {"x": digits.x_train, "labels": digits.y_train}},
        )
        pruned = apply(parse(type="prune", method="structured", ratio=0.5, **extra), handle, ctx)
        found[name] = (_accuracy(pruned, digits), ctx.metrics.get("batchnorm", {}))
    (plain, _), (recovered, metrics) = found["plain"], found["batchnorm"]
    assert metrics["mode"] == "batchnorm" and metrics["layers"] == 3, f"the three BatchNorms were reset: {metrics}"
    assert recovered > plain + 0.05, f"re-estimated statistics give {recovered:.4f} against {plain:.4f} without"
    print(f"\nstructured 50%, real BatchNorms: {plain:.4f} -> {recovered:.4f} test accuracy; {metrics}")
