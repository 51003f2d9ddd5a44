"""Quantization that needs data, through the real API and worker, proven on real models:

- static int8 (QDQ, calibrated on uploaded digits images) of the digits CNN: accuracy on the labelled test
  split barely moves and the file is >= 3.5x smaller; the reported accuracy is recomputed here by running
  the downloaded artifact with onnxruntime;
- int4 weight-only of all-MiniLM-L6-v2 (Hugging Face folder, converted on the way): >= 5x smaller, its
  cosine to the original reported on an uploaded text-lines dataset tokenized by the model's own tokenizer.
"""

import io
from pathlib import Path

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.conftest import Stack, upload
from workers.examples import Digits

pytestmark = [pytest.mark.e2e, pytest.mark.numerics]

SENTENCES = [
    "The committee approved the budget after a long debate.",
    "A small robot cleaned the kitchen floor.",
    "My grandmother baked bread for the whole street on Sunday morning.",
    "Heavy rain flooded the harbour.",
    "The new compiler reduced the build time by half.",
    "An old lighthouse stands on the northern cliff.",
    "The orchestra played late into the night.",
    "Stocks fell sharply after the announcement.",
    "She fixed the bicycle with a borrowed wrench.",
    "Quantum computers may change cryptography.",
    "The football team trained twice a day before the final.",
    "Bees are essential pollinators.",
]


def _dataset(client: httpx.Client, name: str, body: bytes) -> dict:
    response = client.post("/v1/datasets", files={"file": (name, body)})
    assert response.status_code == 201, response.text
    return response.json()


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def _run(client: httpx.Client, stack: Stack, spec: dict) -> tuple[dict, bytes]:
    response = client.post("/v1/jobs", json=spec)
    assert response.status_code == 202, response.text
    job = stack.wait_for(client, response.json()["id"], timeout=900)
    assert job["status"] == "succeeded", job["error"]
    report = client.get(f"/v1/jobs/{job['id']}/report").json()
    artifact = client.get(f"/v1/artifacts/{report['result']['artifact_id']}/content")
    assert artifact.status_code == 200
    return report, artifact.content


def _accuracy(path: Path, x: np.ndarray, y: np.ndarray, batch: int = 32) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    predicted = np.concatenate(
        [session.run(None, {"x": x[i : i + batch]})[0].argmax(1) for i in range(0, len(x), batch)]
    )
    return float((predicted == y).mean())


def test_static_int8_digits_cnn(
    client: httpx.Client, stack: Stack, digits: Digits, digits_cnn_onnx: Path, tmp_path: Path
) -> None:
    model = upload(client, digits_cnn_onnx)
    calibration = _dataset(client, "digits-train.npz", _npz(x=digits.x_train[:256]))
    test_set = _dataset(client, "digits-test.npz", _npz(x=digits.x_test, labels=digits.y_test))
    spec = {
        "model_id": model["id"],
        "passes": [
            {
                "type": "quantize",
                "method": "static",
                "calibration": {"dataset_id": calibration["id"], "samples": 256, "method": "minmax"},
            }
        ],
        "evaluate": {"dataset_id": test_set["id"], "latency": {"runs": 20}},
    }
    report, artifact = _run(client, stack, spec)
    path = tmp_path / "digits-int8.onnx"
    path.write_bytes(artifact)

    result = report["result"]
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops, f"a QDQ model, got ops {sorted(ops)}"
    assert report["evaluation"]["samples"] == len(digits.y_test), "evaluated on the whole uploaded test split"
    assert report["original"]["accuracy"] == _accuracy(digits_cnn_onnx, digits.x_test, digits.y_test), (
        "the original's reported accuracy is what onnxruntime gives on the same data"
    )
    assert result["accuracy"] == _accuracy(path, digits.x_test, digits.y_test), (
        "the result's reported accuracy is what the downloaded artifact gives"
    )
    assert result["accuracy_drop"] <= 0.01, f"static int8 lost {result['accuracy_drop']:.4f} accuracy"
    assert result["size_ratio"] >= 3.5, f"static int8 is only {result['size_ratio']:.2f}x smaller"
    assert result["size_bytes"] == len(artifact)
    assert {d["id"]: d["fields"] for d in report["datasets"]} == {
        calibration["id"]: ["passes.0.calibration.dataset_id"],
        test_set["id"]: ["evaluate.dataset_id"],
    }
    print(
        f"\nstatic int8 digits CNN: accuracy {report['original']['accuracy']:.4f} -> "
        f"{result['accuracy']:.4f}, "
        f"{model['size_bytes']} -> {result['size_bytes']} bytes ({result['size_ratio']:.2f}x), "
        f"p50 speedup {result['speedup_p50']}"
    )


def test_int4_minilm_evaluated_on_text_lines(client: httpx.Client, stack: Stack, minilm_zip: Path) -> None:
    model = upload(client, minilm_zip)
    text = _dataset(client, "sentences.txt", "\n".join(SENTENCES).encode())
    spec = {
        "model_id": model["id"],
        "passes": [{"type": "convert", "to": "onnx", "opset": 17}, {"type": "quantize", "method": "int4"}],
        "evaluate": {"dataset_id": text["id"], "latency": {"runs": 5}},
        "input_shapes": {"input_ids": [4, 32]},
    }
    report, artifact = _run(client, stack, spec)
    ops = {n.op_type for n in onnx.load_from_string(artifact).graph.node}
    assert {"MatMulNBits", "GatherBlockQuantized"} <= ops, "MatMuls and the embedding table are 4-bit"
    result = report["result"]
    assert report["evaluation"]["samples"] == len(SENTENCES), "every line is one sample"
    assert report["datasets"][0]["sha256"] == text["sha256"]
    assert result["size_ratio"] >= 5, f"int4 MiniLM is only {result['size_ratio']:.2f}x smaller"
    assert result["fidelity"]["cosine_mean"] >= 0.9, f"int4 drifted: {result['fidelity']['cosine_mean']}"
    assert report["steps"][0]["fidelity"]["cosine_min"] > 0.999, "the conversion is exact on real sentences"
    assert result["accuracy"] is None, "a dataset without labels reports no accuracy"
    print(
        f"\nint4 MiniLM: {model['size_bytes']} -> {result['size_bytes']} bytes "
        f"({result['size_ratio']:.2f}x), "
        f"cosine mean {result['fidelity']['cosine_mean']:.4f} min {result['fidelity']['cosine_min']:.4f}"
    )
