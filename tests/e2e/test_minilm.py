"""The foundation's promise, end to end on a real model: upload all-MiniLM-L6-v2 (zipped Hugging Face
folder, and an ONNX file), run [convert to ONNX, quantize dynamic] on the real worker, download the
artifact, run it with onnxruntime on 50 real sentences, and compare with the original model."""

from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from tests.conftest import Stack, upload

pytestmark = pytest.mark.e2e

SUBJECTS = [
    "The committee",
    "A small robot",
    "My grandmother",
    "The new compiler",
    "Heavy rain",
    "The orchestra",
    "A tired engineer",
    "The city council",
    "An old lighthouse",
    "The football team",
]
ACTIONS = [
    "approved the budget after a long debate",
    "cleaned the kitchen floor twice",
    "baked bread for the whole street on Sunday morning",
    "reduced the build time by half",
    "flooded the lower streets of the harbour town overnight",
]
SENTENCES = [f"{s} {a}." for s in SUBJECTS for a in ACTIONS]  # 50 sentences of different lengths


def _mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    weights = mask[..., None].astype(np.float32)
    return (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)


@pytest.fixture(scope="module")
def reference(minilm_dir: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir))
    encoded = tokenizer(SENTENCES, padding=True, return_tensors="np")
    model = AutoModel.from_pretrained(str(minilm_dir), use_safetensors=True).eval()
    with torch.inference_mode():
        hidden = model(**{k: torch.from_numpy(v) for k, v in encoded.items()}).last_hidden_state.numpy()
    return dict(encoded), _mean_pool(hidden, encoded["attention_mask"])


def _run_job(client: httpx.Client, stack: Stack, model_id: str, convert: dict) -> tuple[dict, bytes]:
    spec = {
        "model_id": model_id,
        "passes": [convert, {"type": "quantize", "method": "dynamic"}],
        "input_shapes": {"input_ids": [8, 64]},
        "evaluate": {"latency": {"runs": 10}},
    }
    response = client.post("/v1/jobs", json=spec)
    assert response.status_code == 202, response.text
    job = stack.wait_for(client, response.json()["id"], timeout=600)
    assert job["status"] == "succeeded", job["error"]
    report = client.get(f"/v1/jobs/{job['id']}/report").json()
    artifact = client.get(f"/v1/artifacts/{report['result']['artifact_id']}/content")
    assert artifact.status_code == 200
    return report, artifact.content


def _check(
    report: dict,
    artifact: bytes,
    tmp_path: Path,
    reference: tuple[dict[str, np.ndarray], np.ndarray],
    original_size: int,
) -> float:
    encoded, expected = reference
    path = tmp_path / "minilm-int8.onnx"
    path.write_bytes(artifact)
    session = ort.InferenceSession(str(path))
    feeds = {i.name: encoded[i.name].astype(np.int64) for i in session.get_inputs()}
    hidden = session.run(None, feeds)[0]
    got = _mean_pool(hidden, encoded["attention_mask"])
    cosine = (got * expected).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))
    assert cosine.mean() >= 0.98, f"sentence embeddings drifted: mean cosine {cosine.mean():.4f}"
    ratio = original_size / len(artifact)
    assert ratio >= 3.5, f"int8 MiniLM is only {ratio:.2f}x smaller"
    assert report["result"]["size_bytes"] == len(artifact)
    assert report["result"]["size_ratio"] == pytest.approx(ratio), "the report states the same size ratio"
    assert report["steps"][0]["fidelity"]["cosine_min"] > 0.999, "the ONNX export matches the original"
    return float(cosine.mean())


def test_minilm_hugging_face_folder(
    client: httpx.Client,
    stack: Stack,
    minilm_zip: Path,
    tmp_path: Path,
    reference: tuple[dict[str, np.ndarray], np.ndarray],
) -> None:
    model = upload(client, minilm_zip)
    report, artifact = _run_job(client, stack, model["id"], {"type": "convert", "to": "onnx", "opset": 17})
    assert report["steps"][0]["type"] == "convert" and report["original"]["latency"][0]["runtime"] == "torch"
    _check(report, artifact, tmp_path, reference, model["size_bytes"])


def test_minilm_onnx_file(
    client: httpx.Client,
    stack: Stack,
    minilm_onnx: Path,
    tmp_path: Path,
    reference: tuple[dict[str, np.ndarray], np.ndarray],
) -> None:
    model = upload(client, minilm_onnx)
    assert model["format"] == "onnx" and model["inputs"][0]["shape"] == ["batch", "sequence"]
    # An ONNX upload keeps its opset (20, with a Gelu op that has no opset-17 form).
    report, artifact = _run_job(client, stack, model["id"], {"type": "convert", "to": "onnx"})
    _check(report, artifact, tmp_path, reference, model["size_bytes"])
