"""Datasets through the real API and worker: upload (npz, safetensors, text), list, read, delete; every
bad file refused with its code; every dataset reference checked against the model at submit; a job
evaluated on an uploaded dataset reports accuracy and which dataset it used."""

import hashlib
import io
import pickle
import struct
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
from safetensors.numpy import save as safetensors_bytes

from tests.conftest import Stack, upload

N = 40
DYNAMIC = {"type": "quantize", "method": "dynamic"}


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _post(client: httpx.Client, name: str, body: bytes) -> httpx.Response:
    return client.post("/v1/datasets", files={"file": (name, body)})


def _dataset(client: httpx.Client, name: str, body: bytes) -> dict:
    response = _post(client, name, body)
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture(scope="module")
def mlp_data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"x": rng.standard_normal((N, 64)).astype(np.float32), "labels": rng.integers(0, 10, N)}


def test_upload_read_list_delete(client: httpx.Client, stack: Stack, mlp_data: dict[str, np.ndarray]) -> None:
    body = _npz(**mlp_data)
    dataset = _dataset(client, "mlp.npz", body)
    assert dataset["id"].startswith("ds_") and dataset["format"] == "npz"
    assert dataset["sha256"] == hashlib.sha256(body).hexdigest(), "sha256 of the bytes sent"
    assert dataset["samples"] == N and dataset["has_labels"] is True
    assert {a["name"]: (a["dtype"], a["shape"]) for a in dataset["arrays"]} == {
        "x": ("float32", [N, 64]),
        "labels": ("int64", [N]),
    }
    read = client.get(f"/v1/datasets/{dataset['id']}").json()
    assert {k: read[k] for k in ("id", "sha256", "arrays", "samples")} == {
        k: dataset[k] for k in ("id", "sha256", "arrays", "samples")
    }

    tensors = _dataset(client, "mlp.safetensors", safetensors_bytes({"x": mlp_data["x"]}))
    assert (tensors["format"], tensors["samples"], tensors["has_labels"]) == ("safetensors", N, False)
    text = _dataset(client, "sentences.txt", b"first line\n\nsecond line\r\nthird\n")
    assert (text["format"], text["samples"], text["arrays"]) == ("text", 3, []), "blank lines are not samples"

    first = client.get("/v1/datasets", params={"limit": 2}).json()
    second = client.get("/v1/datasets", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    seen = [d["id"] for d in first["items"] + second["items"]]
    assert seen[:3] == [text["id"], tensors["id"], dataset["id"]], "newest first across pages"

    assert client.delete(f"/v1/datasets/{dataset['id']}").status_code == 204
    gone = client.get(f"/v1/datasets/{dataset['id']}")
    assert gone.status_code == 404 and gone.json()["code"] == "not_found"
    assert stack.store().list_keys(f"datasets/{dataset['id']}/") == [], "its file is deleted"


def _safetensors_truncated() -> bytes:
    good = safetensors_bytes({"x": np.zeros((4, 8), np.float32)})
    return good[:-16]


BAD_FILES = [
    ("pickle", "data.npz", pickle.dumps({"x": [1, 2]}), "unsafe_dataset"),
    ("object array", "data.npz", _npz(x=np.array([{"a": 1}, None], dtype=object)), "unsafe_dataset"),
    (
        "sample counts differ",
        "data.npz",
        _npz(x=np.zeros((4, 2), np.float32), labels=np.zeros(3, np.int64)),
        "invalid_dataset",
    ),
    (
        "float labels",
        "data.npz",
        _npz(x=np.zeros((4, 2), np.float32), labels=np.zeros(4, np.float32)),
        "invalid_dataset",
    ),
    ("scalar", "data.npz", _npz(x=np.asarray(np.float32(1.0))), "invalid_dataset"),
    ("zip of other files", "data.npz", _zip({"readme.md": b"not an array"}), "invalid_dataset"),
    ("truncated safetensors", "data.safetensors", _safetensors_truncated(), "invalid_dataset"),
    ("safetensors header past the end", "data.safetensors", struct.pack("<Q", 10_000) + b"{}", "invalid_dataset"),
    ("single .npy", "data.npy", b"\x93NUMPY\x01\x00" + b" " * 40, "unsupported_dataset_format"),
    ("unknown bytes", "data.bin", b"\x01\x02\x03 not a dataset", "unsupported_dataset_format"),
    ("text not UTF-8", "lines.txt", "caf\xe9\n".encode("latin-1"), "invalid_dataset"),
    ("text with only blank lines", "lines.txt", b"\n  \n", "invalid_dataset"),
]


@pytest.mark.parametrize(("case", "name", "body", "code"), BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_files_are_refused_with_a_code(client: httpx.Client, case: str, name: str, body: bytes, code: str) -> None:
    response = _post(client, name, body)
    assert response.status_code == 422, f"{case}: {response.text}"
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == code, f"{case}: {problem}"
    assert len(problem["detail"]) > 30, "the message says what is wrong and what to upload"


def _submit(client: httpx.Client, spec: dict) -> httpx.Response:
    return client.post("/v1/jobs", json=spec)


@pytest.fixture(scope="module")
def mlp_model(stack: Stack, mlp_onnx: Path) -> dict:
    with stack.client() as c:
        return upload(c, mlp_onnx)


MISMATCHES = [
    ("wrong name", {"inp": np.zeros((4, 64), np.float32)}, "no array for model input(s) ['x']"),
    ("extra array", {"x": np.zeros((4, 64), np.float32), "y": np.zeros((4, 1), np.float32)}, "['y']"),
    ("wrong dtype", {"x": np.zeros((4, 64), np.float64)}, "float64"),
    ("wrong fixed size", {"x": np.zeros((4, 32), np.float32)}, "size 32 on axis 1"),
    ("wrong rank", {"x": np.zeros((4, 8, 8), np.float32)}, "rank 3"),
]


@pytest.mark.parametrize(("case", "arrays", "fragment"), MISMATCHES, ids=[c[0] for c in MISMATCHES])
def test_a_dataset_that_does_not_fit_the_model_is_refused_at_submit(
    client: httpx.Client, mlp_model: dict, case: str, arrays: dict, fragment: str
) -> None:
    dataset = _dataset(client, "d.npz", _npz(**arrays))
    response = _submit(
        client, {"model_id": mlp_model["id"], "passes": [DYNAMIC], "evaluate": {"dataset_id": dataset["id"]}}
    )
    assert response.status_code == 422, f"{case}: {response.text}"
    problem = response.json()
    assert problem["code"] == "dataset_mismatch"
    assert problem["errors"][0]["field"] == "evaluate.dataset_id", "the error names the spec field"
    assert fragment in problem["detail"], f"{case}: {problem['detail']}"


def test_missing_and_text_datasets_are_refused_at_submit(client: httpx.Client, mlp_model: dict) -> None:
    spec = {
        "model_id": mlp_model["id"],
        "passes": [{"type": "quantize", "method": "dynamic"}],
        "evaluate": {"dataset_id": "ds_doesnotexist"},
    }
    response = _submit(client, spec)
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "evaluate.dataset_id"
    assert "POST /v1/datasets" in response.json()["detail"]
    text = _dataset(client, "lines.txt", b"hello\nworld\n")
    response = _submit(client, {**spec, "evaluate": {"dataset_id": text["id"]}})
    assert response.status_code == 422 and response.json()["code"] == "dataset_mismatch"
    assert "tokenizer" in response.json()["detail"], "a text dataset needs a model with a tokenizer"
    response = _submit(client, {**spec, "evaluate": {"output": "nope"}})
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "evaluate.output"


def test_a_job_evaluated_on_a_dataset_reports_accuracy(
    client: httpx.Client, stack: Stack, mlp_model: dict, mlp_data: dict[str, np.ndarray]
) -> None:
    dataset = _dataset(client, "mlp.npz", _npz(**mlp_data))
    response = _submit(
        client,
        {
            "model_id": mlp_model["id"],
            "passes": [DYNAMIC],
            "evaluate": {"dataset_id": dataset["id"], "latency": {"runs": 3}},
        },
    )
    assert response.status_code == 202, "no input_shapes needed, the dataset gives them: " + response.text
    job = stack.wait_for(client, response.json()["id"], timeout=300)
    assert job["status"] == "succeeded", job["error"]
    report = client.get(f"/v1/jobs/{job['id']}/report").json()
    assert report["evaluation"]["samples"] == N and report["evaluation"]["dataset_id"] == dataset["id"]
    assert report["datasets"] == [
        {
            "id": dataset["id"],
            "sha256": dataset["sha256"],
            "format": "npz",
            "filename": "mlp.npz",
            "samples": N,
            "fields": ["evaluate.dataset_id"],
        }
    ]
    original, result = report["original"]["accuracy"], report["result"]["accuracy"]
    assert 0 <= original <= 1 and 0 <= result <= 1
    assert report["result"]["accuracy_drop"] == pytest.approx(original - result)
    assert report["steps"][-1]["accuracy"] == result


def test_static_quantization_needs_a_fitting_calibration_dataset(client: httpx.Client, mlp_model: dict) -> None:
    bare = {"type": "quantize", "method": "static"}
    response = _submit(client, {"model_id": mlp_model["id"], "passes": [bare]})
    assert response.status_code == 422 and response.json()["code"] == "validation_error"
    assert response.json()["errors"][0]["field"].startswith("passes.0")
    assert '"calibration"' in response.json()["detail"], "the message shows the missing block"
    wrong = _dataset(client, "d.npz", _npz(x=np.zeros((4, 64), np.float64)))
    static = {"type": "quantize", "method": "static", "calibration": {"dataset_id": wrong["id"]}}
    response = _submit(client, {"model_id": mlp_model["id"], "passes": [DYNAMIC, static]})
    assert response.status_code == 422 and response.json()["code"] == "dataset_mismatch"
    assert response.json()["errors"][0]["field"] == "passes.1.calibration.dataset_id"
