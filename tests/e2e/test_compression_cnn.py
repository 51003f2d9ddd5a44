"""PyTorch-side compression through the API on the digits CNN: each job's artifact is downloaded and run
on digits.x_test here, so the accuracy figures are what a user of the artifact gets. Figures are printed
(pytest -s) for the README table."""

import io
import zipfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import torch

from tests.conftest import Stack, upload
from workers.examples import Digits

pytestmark = pytest.mark.e2e
LATENCY = {"batch_sizes": [32], "runs": 20, "warmup": 3}


def upload_dataset(client: httpx.Client, arrays: dict[str, np.ndarray], name: str) -> str:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as allow_pickle
    response = client.post("/v1/datasets", files={"file": (name, buffer.getvalue())})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def run_job(client: httpx.Client, stack: Stack, spec: dict) -> tuple[dict, dict, bytes]:
    """Submit, wait, and return the report, the model artifact's listing and its bytes."""
    response = client.post("/v1/jobs", json=spec)
    assert response.status_code == 202, response.text
    job = stack.wait_for(client, response.json()["id"], timeout=600)
    assert job["status"] == "succeeded", job["error"]
    report = client.get(f"/v1/jobs/{job['id']}/report").json()
    listing = next(a for a in client.get(f"/v1/jobs/{job['id']}/artifacts").json() if a["kind"] == "model")
    content = client.get(listing["download_url"])
    assert content.status_code == 200
    return report, listing, content.content


def onnx_accuracy(artifact: bytes, digits: Digits) -> float:
    session = ort.InferenceSession(artifact)
    feeds = {session.get_inputs()[0].name: digits.x_test}
    return float((session.run(None, feeds)[0].argmax(1) == digits.y_test).mean())


@pytest.fixture(scope="module")
def ids(stack: Stack, digits: Digits, digits_cnn_onnx: Path) -> dict[str, str]:
    with stack.client() as client:
        return {
            "onnx": upload(client, digits_cnn_onnx)["id"],
            "train": upload_dataset(client, {"x": digits.x_train, "labels": digits.y_train}, "train.npz"),
            "test": upload_dataset(client, {"x": digits.x_test, "labels": digits.y_test}, "test.npz"),
        }


@pytest.fixture(scope="module")
def baseline(digits_cnn_onnx: Path, digits: Digits) -> float:
    return onnx_accuracy(digits_cnn_onnx.read_bytes(), digits)


def test_onnx_upload_to_torch_structured_prune_and_back(
    client: httpx.Client, stack: Stack, ids: dict[str, str], digits: Digits, baseline: float
) -> None:
    spec = {
        "model_id": ids["onnx"],
        "evaluate": {"dataset_id": ids["test"], "latency": LATENCY},
        "passes": [
            {"type": "convert", "to": "torch"},
            {
                "type": "prune",
                "method": "structured",
                "ratio": 0.3,
                "finetune": {"dataset_id": ids["train"], "epochs": 2, "lr": 1e-3},
            },
            {"type": "convert", "to": "onnx"},
        ],
    }
    report, listing, artifact = run_job(client, stack, spec)
    assert [s["type"] for s in report["steps"]] == ["convert", "prune", "convert"]
    assert report["steps"][0]["fidelity"]["cosine_min"] > 0.9999, "ONNX -> torch is exact"
    params = report["original"]["param_count"], report["result"]["param_count"]
    assert params[1] <= 0.75 * params[0], f"parameters {params[0]} -> {params[1]}"
    accuracy = onnx_accuracy(artifact, digits)
    assert baseline - accuracy <= 0.02, f"accuracy {baseline:.4f} -> {accuracy:.4f}"
    assert report["result"]["accuracy"] == pytest.approx(accuracy), "the report states the artifact's accuracy"
    assert listing["format"] == "onnx" and listing["name"] == "model.onnx"
    speedup = report["result"]["speedup_p50"]["32"]
    print(
        f"\nstructured 30% + 2 epochs: params {params[0]} -> {params[1]} "
        f"({1 - params[1] / params[0]:.1%} fewer), "
        f"accuracy {baseline:.4f} -> {accuracy:.4f}, CPU p50 speedup at batch 32 {speedup:.2f}x"
    )


def test_onnx_to_torch_prune_back_to_onnx_then_static_int8(
    client: httpx.Client, stack: Stack, ids: dict[str, str], digits: Digits, baseline: float
) -> None:
    spec = {
        "model_id": ids["onnx"],
        "evaluate": {"dataset_id": ids["test"], "latency": LATENCY},
        "passes": [
            {"type": "convert", "to": "torch"},
            {
                "type": "prune",
                "method": "structured",
                "ratio": 0.3,
                "finetune": {"dataset_id": ids["train"], "epochs": 2},
            },
            {"type": "convert", "to": "onnx"},
            {
                "type": "quantize",
                "method": "static",
                "calibration": {"dataset_id": ids["train"], "samples": 128},
            },
        ],
    }
    report, _, artifact = run_job(client, stack, spec)
    assert [s["type"] for s in report["steps"]] == ["convert", "prune", "convert", "quantize"]
    accuracy = onnx_accuracy(artifact, digits)
    ratio = report["result"]["size_ratio"]
    assert baseline - accuracy <= 0.03, f"accuracy {baseline:.4f} -> {accuracy:.4f}"
    print(
        f"\nONNX -> torch -> structured 30% (+2 epochs) -> ONNX -> static int8: {ratio:.2f}x smaller, "
        f"accuracy {baseline:.4f} -> {accuracy:.4f}"
    )


def test_magnitude_pruning(
    client: httpx.Client, stack: Stack, ids: dict[str, str], digits: Digits, baseline: float
) -> None:
    spec = {
        "model_id": ids["onnx"],
        "evaluate": {"dataset_id": ids["test"], "latency": LATENCY},
        "passes": [{"type": "prune", "method": "magnitude", "sparsity": 0.7}],
    }
    report, listing, artifact = run_job(client, stack, spec)
    assert [(s["type"], s["auto"]) for s in report["steps"]] == [
        ("convert", True),
        ("prune", False),
        ("convert", True),
    ], "ONNX goes to torch for the pass and a pipeline ending on torch is exported to ONNX by itself"
    prune = report["steps"][1]
    assert prune["sparsity"] >= 0.69, prune
    result = report["result"]
    assert result["size_zstd_bytes"] < 0.6 * result["size_bytes"], "a 70% sparse file compresses"
    accuracy = onnx_accuracy(artifact, digits)
    print(
        f"\nmagnitude 70%: sparsity {result['sparsity']:.3f}, ONNX {result['size_bytes']} B, zstd "
        f"{result['size_zstd_bytes']} B, accuracy {baseline:.4f} -> {accuracy:.4f} (no fine-tuning)"
    )


def test_tucker_with_finetuning(
    client: httpx.Client, stack: Stack, ids: dict[str, str], digits: Digits, baseline: float
) -> None:
    spec = {
        "model_id": ids["onnx"],
        "evaluate": {"dataset_id": ids["test"], "latency": LATENCY},
        "passes": [
            {
                "type": "lowrank",
                "method": "tucker",
                "rank_ratio": 0.5,
                "finetune": {"dataset_id": ids["train"], "epochs": 2},
            }
        ],
    }
    report, _, artifact = run_job(client, stack, spec)
    assert report["steps"][0]["auto"] and report["steps"][0]["format"] == "torch", "ONNX -> torch by itself"
    assert len(report["steps"][1]["metrics"]["factorized"]) == 2, report["steps"][1]["metrics"]
    params = report["original"]["param_count"], report["result"]["param_count"]
    assert params[1] < params[0]
    accuracy = onnx_accuracy(artifact, digits)
    assert baseline - accuracy <= 0.05, f"accuracy {baseline:.4f} -> {accuracy:.4f}"
    print(f"\ntucker 0.5 + 2 epochs: params {params[0]} -> {params[1]}, accuracy {baseline:.4f} -> {accuracy:.4f}")


def test_distill_pruned_student_with_labels_to_pt2(
    client: httpx.Client, stack: Stack, ids: dict[str, str], digits: Digits, baseline: float
) -> None:
    spec = {
        "model_id": ids["onnx"],
        "evaluate": {"dataset_id": ids["test"], "latency": LATENCY},
        "passes": [
            {"type": "prune", "method": "structured", "ratio": 0.5},
            {"type": "distill", "dataset_id": ids["train"], "epochs": 2, "lr": 2e-3},
            {"type": "convert", "to": "pt2"},
        ],
    }
    report, listing, artifact = run_job(client, stack, spec)
    assert listing["name"] == "model.pt2" and listing["media_type"] == "application/zip"
    assert report["steps"][2]["metrics"]["loss"] == "kl+alpha*ce"
    path = Path(stack.home) / "distilled.pt2"
    path.write_bytes(artifact)
    with torch.inference_mode():
        logits = torch.export.load(str(path)).module()(torch.from_numpy(digits.x_test)).numpy()
    accuracy = float((logits.argmax(1) == digits.y_test).mean())
    assert accuracy >= baseline - 0.03, f"accuracy {baseline:.4f} -> {accuracy:.4f}"
    print(
        f"\nstructured 50% then distilled 2 epochs -> pt2: params {report['original']['param_count']} -> "
        f"{report['result']['param_count']}, accuracy {baseline:.4f} -> {accuracy:.4f}"
    )


def test_torchscript_artifact(
    client: httpx.Client, stack: Stack, ids: dict[str, str], digits: Digits, baseline: float
) -> None:
    spec = {
        "model_id": ids["onnx"],
        "input_shapes": {"x": [4, 1, 8, 8]},
        "evaluate": {"latency": {"runs": 3}},
        "passes": [{"type": "convert", "to": "torchscript"}],
    }
    report, listing, artifact = run_job(client, stack, spec)
    assert listing["format"] == "torchscript" and zipfile.is_zipfile(io.BytesIO(artifact))
    module = torch.jit.load(io.BytesIO(artifact))
    logits = module(torch.from_numpy(digits.x_test)).detach().numpy()
    assert float((logits.argmax(1) == digits.y_test).mean()) == pytest.approx(baseline)


def test_aoti_package_beside_the_pt2(
    client: httpx.Client, stack: Stack, ids: dict[str, str], digits: Digits, digits_cnn_onnx: Path
) -> None:
    """convert to pt2 with `aoti`: the job delivers the AOTInductor package too, compiled for this CPU; it is
    downloaded and run here on another batch size than the one traced, as a server would load it."""
    spec = {
        "model_id": ids["onnx"],
        "evaluate": {"dataset_id": ids["test"], "latency": LATENCY},
        "passes": [{"type": "convert", "to": "pt2", "aoti": True}],
    }
    response = client.post("/v1/jobs", json=spec)
    assert response.status_code == 202, response.text
    job = stack.wait_for(client, response.json()["id"], timeout=600)
    assert job["status"] == "succeeded", job["error"]
    report = client.get(f"/v1/jobs/{job['id']}/report").json()
    listings = {a["name"]: a for a in client.get(f"/v1/jobs/{job['id']}/artifacts").json()}
    package = listings["model.aoti.pt2"]
    assert "model.pt2" in listings and package["format"] == "aoti" and package["media_type"] == "application/zip"
    aoti = report["result"]["aoti"]
    assert aoti["artifact_id"] == package["id"] and aoti["device"] == "cpu" and aoti["compile_seconds"] > 0
    assert "aoti_load_package" in aoti["how_to_load"] and aoti["sha256"] == package["sha256"]
    assert aoti["fidelity"]["cosine_min"] > 0.9999, aoti["fidelity"]
    (row,) = aoti["latency"]
    assert row["compiled"] == "aotinductor" and row["batch_size"] == 32 and row["p50_ms"] > 0
    page = client.get(f"/v1/jobs/{job['id']}/report.html").text
    assert "<td>result, AOTInductor package</td>" in page and "aoti_load_package" in page
    path = Path(stack.home) / "downloaded.aoti.pt2"
    path.write_bytes(client.get(package["download_url"]).content)
    compiled = torch._inductor.aoti_load_package(str(path))
    images = torch.from_numpy(digits.x_test[:77])  # strides (64, 1, 8, 1): x[:, None] from the 8x8 images
    with torch.inference_mode():
        logits = compiled(images.clone(memory_format=torch.contiguous_format)).numpy()
    session = ort.InferenceSession(str(digits_cnn_onnx))
    (original,) = session.run(None, {session.get_inputs()[0].name: digits.x_test[:77]})
    assert np.array_equal(logits.argmax(1), original.argmax(1)), "the package computes what the upload does"
    np.testing.assert_allclose(logits, original, atol=1e-4)
    accuracy = float((logits.argmax(1) == digits.y_test[:77]).mean())
    pt2 = report["result"]["latency"][0]["p50_ms"]
    print(
        f"\nAOTInductor package on the CPU: compiled in {aoti['compile_seconds']:.1f} s, {package['size_bytes']} B, "
        f"batch 32 p50 {row['p50_ms']:.3f} ms vs the .pt2 {pt2:.3f} ms, accuracy on 77 digits {accuracy:.4f}"
    )


BAD: list[tuple[dict[str, Any], str]] = [
    ({"type": "prune", "method": "magnitude", "sparsity": 1.5}, "sparsity"),
    ({"type": "prune", "method": "magnitude"}, "sparsity"),
    ({"type": "prune", "method": "structured", "ratio": 0.3, "importance": "l3"}, "importance"),
    ({"type": "prune", "method": "threshold", "threshold": -1}, "threshold"),
    ({"type": "lowrank", "method": "svd", "rank_ratio": 0}, "rank_ratio"),
    ({"type": "lowrank", "method": "tucker", "energy": 0.9}, "energy"),
    ({"type": "distill", "dataset_id": "ds_x", "temperature": 0}, "temperature"),
    ({"type": "distill", "dataset_id": "ds_x", "student": "tiny"}, "student"),
    ({"type": "convert", "to": "pt2", "opset": 17}, "opset"),
    ({"type": "convert", "to": "onnx", "aoti": True}, "aoti"),
    (
        {
            "type": "prune",
            "method": "magnitude",
            "sparsity": 0.5,
            "finetune": {"dataset_id": "ds_x", "epochs": 0},
        },
        "epochs",
    ),
]


@pytest.mark.parametrize(("bad", "named"), BAD, ids=[f"{b['type']}-{n}" for b, n in BAD])
def test_bad_parameter_is_422_naming_it(client: httpx.Client, ids: dict[str, str], bad: dict, named: str) -> None:
    response = client.post("/v1/jobs", json={"model_id": ids["onnx"], "passes": [bad]})
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "validation_error" and named in problem["detail"], problem["detail"]


def test_bf16_pytorch_artifact_for_gpus(
    client: httpx.Client, stack: Stack, ids: dict[str, str], digits: Digits, baseline: float
) -> None:
    fp32 = {
        "model_id": ids["onnx"],
        "evaluate": {"dataset_id": ids["test"], "latency": LATENCY},
        "passes": [{"type": "convert", "to": "pt2"}],
    }
    _, fp32_listing, _ = run_job(client, stack, fp32)
    spec = {**fp32, "passes": [{"type": "quantize", "method": "bf16"}, {"type": "convert", "to": "pt2"}]}
    report, listing, artifact = run_job(client, stack, spec)
    quantize = next(step for step in report["steps"] if step["type"] == "quantize")
    assert quantize["metrics"]["dtype"] == "bfloat16", quantize
    ratio = fp32_listing["size_bytes"] / listing["size_bytes"]
    assert ratio > 1.6, f"bf16 weights should halve the .pt2: {fp32_listing['size_bytes']} -> {listing['size_bytes']}"
    path = Path(stack.home) / "bf16.pt2"
    path.write_bytes(artifact)
    module = torch.export.load(str(path)).module()  # our own artifact, just downloaded
    logits = module(torch.from_numpy(digits.x_test)).detach()
    assert logits.dtype == torch.float32, "callers keep feeding and reading float32"
    accuracy = float((logits.numpy().argmax(1) == digits.y_test).mean())
    assert accuracy >= baseline - 0.01, f"accuracy {baseline:.4f} -> {accuracy:.4f}"
    print(
        f"\nbf16 on PyTorch -> pt2: {fp32_listing['size_bytes']} -> {listing['size_bytes']} B (x{ratio:.2f}), "
        f"accuracy {baseline:.4f} -> {accuracy:.4f}"
    )


def test_reduced_precision_on_torch_must_end_as_a_torch_artifact(client: httpx.Client, ids: dict[str, str]) -> None:
    for passes, code, field in (
        ([{"type": "quantize", "method": "bf16"}], "impossible_pipeline", "passes.0"),
        (
            [{"type": "quantize", "method": "bf16", "representation": "onnx"}, {"type": "convert", "to": "pt2"}],
            "validation_error",
            "passes.0.quantize.bf16.representation",
        ),
    ):
        response = client.post(
            "/v1/jobs", json={"model_id": ids["onnx"], "input_shapes": {"x": [4, 1, 8, 8]}, "passes": passes}
        )
        problem = response.json()
        assert response.status_code == 422 and problem["code"] == code, response.text
        assert [e["field"] for e in problem["errors"]] == [field], problem
