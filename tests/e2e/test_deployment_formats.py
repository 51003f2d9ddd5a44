"""Deployment formats through the API: the PyTorch digits CNN (its ONNX export) delivered as an OpenVINO IR and as
TFLite (float16, int8), NNCF's int8 beside onnxruntime's in one search (as ONNX and as an OpenVINO IR), and
MiniLM as an OpenVINO IR. Each artifact is downloaded and run here in
its own runtime (openvino.Core, the LiteRT interpreter), the report's latency rows name that runtime and its
version, and sizes and latencies are printed (pytest -s) for the README."""

import io
import zipfile
from importlib.metadata import version
from pathlib import Path

import httpx
import numpy as np
import openvino as ov
import pytest
import torch
from ai_edge_litert.interpreter import Interpreter
from transformers import AutoModel, AutoTokenizer

from tests.conftest import Stack, upload
from tests.e2e.test_compression_cnn import LATENCY, onnx_accuracy, run_job, upload_dataset
from tests.e2e.test_minilm import _mean_pool
from tests.e2e.test_quantize_datasets import SENTENCES, _dataset
from tests.e2e.test_search_cnn import run_search
from workers.examples import Digits

pytestmark = [pytest.mark.e2e, pytest.mark.numerics]


@pytest.fixture(scope="module")
def ids(stack: Stack, digits: Digits, digits_cnn_onnx: Path) -> dict[str, str]:
    with stack.client() as client:
        return {
            "onnx": upload(client, digits_cnn_onnx)["id"],
            "train": upload_dataset(client, {"x": digits.x_train}, "calibration.npz"),
            "test": upload_dataset(client, {"x": digits.x_test, "labels": digits.y_test}, "test.npz"),
        }


@pytest.fixture(scope="module")
def baseline(digits_cnn_onnx: Path, digits: Digits) -> float:
    return onnx_accuracy(digits_cnn_onnx.read_bytes(), digits)


def openvino_model(artifact: bytes, folder: Path) -> ov.CompiledModel:
    """The downloaded zip unpacked and compiled for the CPU, as the report's how_to_load says."""
    with zipfile.ZipFile(io.BytesIO(artifact)) as archive:
        assert sorted(archive.namelist()) == ["model.bin", "model.xml"], archive.namelist()
        archive.extractall(folder)
    return ov.Core().compile_model(str(folder / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def tflite_accuracy(artifact: bytes, digits: Digits, layout: list[int] | None) -> float:
    """The downloaded TFLite model in the LiteRT interpreter on the test digits, fed in the layout the report
    names."""
    interpreter = Interpreter(model_content=artifact)
    runner = interpreter.get_signature_runner()
    x = np.ascontiguousarray(digits.x_test.transpose(layout)) if layout else digits.x_test
    logits = next(iter(runner(x=x).values()))
    return float((logits.argmax(1) == digits.y_test).mean())


def check_rows(report: dict, runtime: str, runtime_version: str) -> None:
    """Every latency row of the result names the runtime that timed it with its version; the original's too."""
    for row in report["result"]["latency"]:
        assert (row["runtime"], row["runtime_version"]) == (runtime, runtime_version), row
    for row in report["original"]["latency"]:
        assert row["runtime"] == "onnxruntime" and row["runtime_version"] == version("onnxruntime"), row


def summary(name: str, report: dict, accuracy: float, baseline: float) -> str:
    result, original = report["result"], report["original"]
    return (
        f"\n{name}: {result['size_bytes']} bytes (original ONNX {original['size_bytes']}), accuracy "
        f"{baseline:.4f} -> {accuracy:.4f}, p50 at batch 32 {result['latency'][0]['p50_ms']:.3f} ms on "
        f"{result['latency'][0]['runtime']} {result['latency'][0]['runtime_version']} (original "
        f"{original['latency'][0]['p50_ms']:.3f} ms on onnxruntime), cosine {result['fidelity']['cosine_mean']:.5f}"
    )


def test_digits_cnn_as_openvino_ir(
    client: httpx.Client, stack: Stack, ids: dict[str, str], digits: Digits, baseline: float, tmp_path: Path
) -> None:
    spec = {
        "model_id": ids["onnx"],
        "evaluate": {"dataset_id": ids["test"], "latency": LATENCY},
        "passes": [{"type": "convert", "to": "openvino"}],
    }
    report, listing, artifact = run_job(client, stack, spec)
    assert listing["format"] == "openvino" and listing["name"] == "model.openvino.zip", listing
    compiled = openvino_model(artifact, tmp_path)
    accuracy = float((compiled(digits.x_test)[0].argmax(1) == digits.y_test).mean())
    assert abs(baseline - accuracy) <= 0.01, f"accuracy {baseline:.4f} -> {accuracy:.4f}"
    assert report["result"]["accuracy"] == pytest.approx(accuracy), "the report states the artifact's accuracy"
    assert report["steps"][-1]["conversion_fidelity"]["cosine_min"] > 0.9999, "a float32 IR is the same model"
    check_rows(report, "openvino", ov.get_version())
    print(summary("OpenVINO IR float32", report, accuracy, baseline))


@pytest.mark.parametrize("precision", ["float16", "int8"])
def test_digits_cnn_as_tflite(
    client: httpx.Client, stack: Stack, ids: dict[str, str], digits: Digits, baseline: float, precision: str
) -> None:
    convert: dict = {"type": "convert", "to": "tflite", "precision": precision}
    if precision == "int8":
        convert["calibration"] = {"dataset_id": ids["train"], "samples": 256}
    spec = {
        "model_id": ids["onnx"],
        "evaluate": {"dataset_id": ids["test"], "latency": LATENCY},
        "passes": [convert],
    }
    report, listing, artifact = run_job(client, stack, spec)
    assert listing["format"] == "tflite" and listing["name"] == "model.tflite", listing
    layout = report["result"]["input_layout"]["inputs"]["x"]
    assert layout == [0, 2, 3, 1], f"the TFLite model takes NHWC images, and the report says so: {layout}"
    accuracy = tflite_accuracy(artifact, digits, layout)
    types = {d["dtype"] for d in Interpreter(model_content=artifact).get_tensor_details()}
    assert (np.int8 in types) == (precision == "int8") and (np.float16 in types) == (precision == "float16"), types
    assert abs(baseline - accuracy) <= 0.01, f"accuracy {baseline:.4f} -> {accuracy:.4f}"
    assert report["result"]["accuracy"] == pytest.approx(accuracy), "the report states the artifact's accuracy"
    check_rows(report, "litert", version("ai-edge-litert"))
    print(summary(f"TFLite {precision}", report, accuracy, baseline))


def test_minilm_as_openvino_ir(stack: Stack, minilm_zip: Path, minilm_dir: Path, tmp_path: Path) -> None:
    with stack.client() as client:
        model = upload(client, minilm_zip)
        text = _dataset(client, "sentences.txt", "\n".join(SENTENCES).encode())
        spec = {
            "model_id": model["id"],
            "passes": [{"type": "convert", "to": "openvino"}],
            "evaluate": {"dataset_id": text["id"], "latency": {"runs": 5}},
            "input_shapes": {"input_ids": [4, 32]},
        }
        report, _, artifact = run_job(client, stack, spec)
    compiled = openvino_model(artifact, tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir))
    encoded = tokenizer(SENTENCES, padding=True, return_tensors="np")
    names = {i.get_any_name() for i in compiled.inputs}
    ours = compiled({k: v.astype(np.int64) for k, v in encoded.items() if k in names})[0]
    original = AutoModel.from_pretrained(str(minilm_dir), use_safetensors=True).eval()
    with torch.inference_mode():
        hidden = original(**{k: torch.from_numpy(v) for k, v in encoded.items()}).last_hidden_state.numpy()
    a, b = _mean_pool(ours, encoded["attention_mask"]), _mean_pool(hidden, encoded["attention_mask"])
    cosine = float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())
    assert cosine > 0.9999, f"the OpenVINO IR's sentence embeddings are the original's: min cosine {cosine:.6f}"
    assert report["result"]["fidelity"]["cosine_min"] > 0.999, report["result"]["fidelity"]
    for row in report["result"]["latency"]:
        assert (row["runtime"], row["runtime_version"]) == ("openvino", ov.get_version()), row
    comparison = next(c for c in report["result"]["latency_comparison"] if c["headline"])
    assert comparison["baseline"] == "original_as_onnx", "the headline is against the original on onnxruntime"
    result = report["result"]
    print(
        f"\nMiniLM OpenVINO IR: {result['size_bytes']} bytes, sentence cosine (min) {cosine:.6f}, report cosine "
        f"{result['fidelity']['cosine_mean']:.6f}, p50 at batch 4 x 32 tokens {result['latency'][0]['p50_ms']:.2f} ms "
        f"on openvino {ov.get_version()} (original on torch {report['original']['latency'][0]['p50_ms']:.2f} ms, "
        f"as ONNX on onnxruntime {report['original']['latency_as_onnx'][0]['p50_ms']:.2f} ms)"
    )


def test_one_search_compares_nncf_int8_with_onnxruntimes(
    stack: Stack, ids: dict[str, str], digits: Digits, baseline: float, tmp_path: Path
) -> None:
    """onnxruntime's static int8 and NNCF's, as ONNX on onnxruntime and as an OpenVINO IR on OpenVINO, in one
    search; NNCF's IR is downloaded and run here."""
    calibration = {"dataset_id": ids["train"], "samples": 256}
    nncf = {"type": "quantize", "method": "nncf", "calibration": calibration}
    body = {
        "model_id": ids["onnx"],
        "evaluate": {"dataset_id": ids["test"], "latency": LATENCY},
        "constraints": {"max_accuracy_drop": 0.01},
        "space": [
            {
                "label": "onnxruntime int8",
                "passes": [{"type": "quantize", "method": "static", "calibration": calibration}],
            },
            {"label": "nncf int8", "passes": [nncf]},
            {"label": "nncf int8 openvino", "passes": [nncf, {"type": "convert", "to": "openvino"}]},
        ],
    }
    found = run_search(stack, body)
    assert found["status"] == "succeeded", found["verdict"]
    states = {c["label"]: c["state"] for c in found["candidates"]}
    assert set(states.values()) == {"succeeded"}, states
    assert all(c["point"] for c in found["candidates"]), "every candidate is a point of the comparison"
    jobs = {c["label"]: c["job_id"] for c in found["candidates"]}
    with stack.client() as client:
        reports = {label: client.get(f"/v1/jobs/{job}/report").json() for label, job in jobs.items()}
        listing = next(
            a for a in client.get(f"/v1/jobs/{jobs['nncf int8 openvino']}/artifacts").json() if a["kind"] == "model"
        )
        artifact = client.get(listing["download_url"]).content
    runtimes = {label: r["result"]["latency"][0]["runtime"] for label, r in reports.items()}
    expected = {"onnxruntime int8": "onnxruntime", "nncf int8": "onnxruntime", "nncf int8 openvino": "openvino"}
    assert runtimes == expected, "each candidate was timed in its own runtime"
    report = reports["nncf int8 openvino"]
    assert report["steps"][0]["metrics"]["nncf"]["version"] == version("nncf"), report["steps"][0]["metrics"]
    check_rows(report, "openvino", ov.get_version())
    compiled = openvino_model(artifact, tmp_path)
    ops = {op.get_type_name() for op in ov.Core().read_model(str(tmp_path / "model.xml")).get_ops()}
    assert "FakeQuantize" in ops, f"the IR quantizes its activations: {sorted(ops)}"
    accuracy = float((compiled(digits.x_test)[0].argmax(1) == digits.y_test).mean())
    assert abs(baseline - accuracy) <= 0.01, f"accuracy {baseline:.4f} -> {accuracy:.4f}"
    for label, r in reports.items():
        print(summary(label, r, r["result"]["accuracy"], baseline))
