"""A detector-like ONNX model (Resize, ConvTranspose, Split, a sigmoid map; as torch's TorchScript exporter
writes it, dynamic batch and image size) uploaded through the API, converted to torch, pruned and
factorized there, exported back to ONNX; the downloaded artifact runs at another image size."""

from pathlib import Path

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from tests.conftest import Stack, upload
from tests.conversion_models import Detector, export
from tests.e2e.test_compression_cnn import run_job, upload_dataset

pytestmark = [pytest.mark.e2e, pytest.mark.numerics]
RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def detector_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("detector") / "detector.onnx"
    return export(Detector(), torch.randn(2, 3, 32, 48), path, [0, 2, 3], dynamo=False, opset=13)


def test_detector_onnx_to_torch_prune_lowrank_and_back(client: httpx.Client, stack: Stack, detector_onnx: Path) -> None:
    images = RNG.standard_normal((64, 3, 32, 48)).astype(np.float32)
    spec = {
        "model_id": upload(client, detector_onnx)["id"],
        "evaluate": {"dataset_id": upload_dataset(client, {"x": images[:16]}, "eval.npz")},
        "passes": [
            {"type": "convert", "to": "torch"},
            {"type": "prune", "method": "structured", "ratio": 0.25, "round_to": 2},
            {"type": "lowrank", "method": "tucker", "rank_ratio": 0.75},
            {"type": "convert", "to": "onnx"},
        ],
    }
    report, listing, artifact = run_job(client, stack, spec)
    assert [s["type"] for s in report["steps"]] == ["convert", "prune", "lowrank", "convert"]
    assert report["steps"][0]["fidelity"]["cosine_min"] > 0.9999, "ONNX -> torch changed what the detector computes"
    params = report["original"]["param_count"], report["result"]["param_count"]
    assert params[1] < params[0], f"pruning and factorization removed no parameters: {params}"
    assert listing["format"] == "onnx"

    session = ort.InferenceSession(artifact, providers=["CPUExecutionProvider"])
    other = RNG.standard_normal((3, 3, 48, 64)).astype(np.float32)
    got = session.run(None, {session.get_inputs()[0].name: other})[0]
    original = ort.InferenceSession(str(detector_onnx), providers=["CPUExecutionProvider"])
    want = original.run(None, {"x": other})[0]
    assert got.shape == want.shape, f"the artifact's map is {got.shape} at another image size, not {want.shape}"
    assert np.all((got >= 0) & (got <= 1)), "the artifact's probability map left [0, 1]"
    ops = {n.op_type for n in onnx.load_model_from_string(artifact).graph.node}
    assert {"Resize", "ConvTranspose"} <= ops, f"the artifact lost the detector's heads: {sorted(ops)}"
    cosine = report["result"]["fidelity"]["cosine_mean"]
    print(
        f"\ndetector ONNX -> torch -> structured 25% -> tucker 0.75 -> ONNX: params {params[0]} -> {params[1]}, "
        f"cosine to the original {cosine:.4f}"
    )
