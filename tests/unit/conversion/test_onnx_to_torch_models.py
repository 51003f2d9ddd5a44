"""Small models as torch's exporters write them (TorchScript-based and dynamo): a detector with Resize and
ConvTranspose heads and a sigmoid map, LSTM and GRU recognisers with a dynamic width, a transformer encoder.
Each is converted, compared with onnxruntime on other sizes than the conversion's example, exported back by
the convert pass; the detector is pruned (magnitude and structured), the encoder factorized and distilled,
and both exported again."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from tests.conversion_models import Detector, Encoder, Recogniser, export
from tests.pass_runs import apply, parse
from workers.context import PassContext
from workers.conversion.onnx_to_torch import onnx_to_torch
from workers.runtime import ModelHandle

torch.manual_seed(0)
RNG = np.random.default_rng(0)


MODELS = {
    "detector-torchscript-opset11": (Detector, (2, 3, 32, 48), (1, 3, 64, 40), [0, 2, 3], False, 11),
    "detector-dynamo-opset18": (Detector, (2, 3, 32, 48), (3, 3, 48, 32), [0, 2, 3], True, 18),
    "lstm-recogniser-torchscript-opset13": (
        lambda: Recogniser(nn.LSTM),
        (2, 1, 8, 40),
        (1, 1, 8, 96),
        [0, 3],
        False,
        13,
    ),
    "gru-recogniser-torchscript-opset14": (lambda: Recogniser(nn.GRU), (2, 1, 8, 40), (3, 1, 8, 72), [0, 3], False, 14),
    # the TorchScript exporter writes the attention's sequence length as a constant: only the batch varies
    "encoder-torchscript-opset14": (Encoder, (2, 7), (3, 7), [0, 1], False, 14),
    "encoder-dynamo-opset18": (Encoder, (2, 7), (3, 11), [0, 1], True, 18),
}


def feed_of(name: str, shape: tuple[int, ...]) -> np.ndarray:
    if name.startswith("encoder"):
        return RNG.integers(0, 50, shape).astype(np.int64)
    return RNG.standard_normal(shape).astype(np.float32)


@pytest.fixture(scope="module", params=list(MODELS))
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    name = request.param
    make, shape, _, axes, dynamo, opset = MODELS[name]
    path = tmp_path_factory.mktemp("models") / f"{name}.onnx"
    return name, export(make(), torch.from_numpy(feed_of(name, shape)), path, axes, dynamo, opset)


def ort_run(path: Path | bytes, x: np.ndarray) -> np.ndarray:
    source = path if isinstance(path, bytes) else str(path)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {session.get_inputs()[0].name: x})[0])


def handle_of(path: Path, axes: list[int]) -> ModelHandle:
    return ModelHandle("onnx", ["x"], ["y"], {"x": axes}, path=path)


def test_converted_model_matches_and_exports_back(exported: tuple[str, Path], tmp_path: Path) -> None:
    name, path = exported
    _, shape, other_shape, _, _, _ = MODELS[name]
    example, other = feed_of(name, shape), feed_of(name, other_shape)
    module = onnx_to_torch(onnx.load(str(path)), {"x": example})
    with torch.no_grad():
        got = module(torch.from_numpy(other)).numpy()
    np.testing.assert_allclose(got, ort_run(path, other), rtol=1e-4, atol=1e-4, err_msg="torch differs from ONNX")

    ctx = PassContext(workdir=tmp_path, step=1, device="cpu", example={"x": example})
    back = apply(parse(type="convert", to="onnx"), handle_of(path, MODELS[name][3]).with_torch(module), ctx)
    np.testing.assert_allclose(
        ort_run(back.path, other), ort_run(path, other), rtol=1e-4, atol=1e-4, err_msg="ONNX -> torch -> ONNX drifts"
    )


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    path = tmp_path_factory.mktemp("detector") / "detector.onnx"
    example = feed_of("detector", (2, 3, 32, 48))
    return export(Detector(), torch.from_numpy(example), path, [0, 2, 3], False, 13), example


@pytest.mark.parametrize(
    "prune", [{"method": "magnitude", "sparsity": 0.5}, {"method": "structured", "ratio": 0.5, "round_to": 4}]
)
def test_converted_detector_prunes_and_exports(
    detector: tuple[Path, np.ndarray], prune: dict[str, object], tmp_path: Path
) -> None:
    path, example = detector
    handle = handle_of(path, [0, 2, 3])
    ctx = PassContext(workdir=tmp_path, step=0, device="cpu", example={"x": example})
    converted = apply(parse(type="convert", to="torch"), handle, ctx)
    before = sum(p.numel() for p in converted.module.parameters())
    pruned = apply(parse(type="prune", **prune), converted, ctx)
    weights = [p for p in pruned.module.parameters() if p.dim() >= 2]
    zeros = sum(int((p == 0).sum()) for p in weights) / sum(p.numel() for p in weights)
    after = sum(p.numel() for p in pruned.module.parameters())
    assert zeros >= 0.45 or after < 0.85 * before, f"nothing was pruned: {zeros:.2f} zeros, {before} -> {after} params"
    ctx.step = 1
    back = apply(parse(type="convert", to="onnx"), pruned, ctx)
    other = feed_of("detector", (1, 3, 48, 64))
    out = ort_run(back.path, other)
    assert out.shape == ort_run(path, other).shape, "the pruned detector's map changed shape"
    assert np.all((out >= 0) & (out <= 1)), "the pruned detector's probability map left [0, 1]"


def test_converted_encoder_factorizes_distills_and_exports(tmp_path: Path) -> None:
    """The transformer encoder's Linear layers take SVD, then distillation from the original ONNX model."""
    example = feed_of("encoder", (2, 7))
    path = export(Encoder(), torch.from_numpy(example), tmp_path / "encoder.onnx", [0, 1], dynamo=True, opset=18)
    original = handle_of(path, [0, 1])
    ctx = PassContext(
        workdir=tmp_path,
        step=0,
        device="cpu",
        example={"x": example},
        datasets={"ids": {"x": feed_of("encoder", (64, 7))}},
        original=original,
    )
    converted = apply(parse(type="convert", to="torch"), original, ctx)
    factorized = apply(parse(type="lowrank", method="svd", rank_ratio=0.5), converted, ctx)
    linears = [m for m in factorized.module.modules() if isinstance(m, nn.Linear)]
    assert len(linears) > len([m for m in converted.module.modules() if isinstance(m, nn.Linear)]), "no SVD"
    student = apply(parse(type="distill", dataset_id="ids", epochs=2, lr=1e-3), factorized, ctx)
    losses = ctx.metrics["epoch_losses"]
    assert losses[-1] < losses[0], f"distillation from the ONNX teacher did not learn: {losses}"
    ctx.step = 1
    back = apply(parse(type="convert", to="onnx"), student, ctx)
    other = feed_of("encoder", (3, 11))
    assert ort_run(back.path, other).shape == ort_run(path, other).shape, "the distilled encoder's output changed"
