"""Jobs through the real API, broker and worker: validation, lifecycle, idempotency, cancel, artifacts."""

import hashlib
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from tests.conftest import Stack, upload

QUANTIZE = [{"type": "quantize", "method": "dynamic"}]


@pytest.fixture(scope="module")
def mlp_id(stack: Stack, mlp_onnx: Path) -> str:
    with stack.client() as c:
        return str(upload(c, mlp_onnx)["id"])


def submit(client: httpx.Client, body: dict, **headers: str) -> httpx.Response:
    return client.post("/v1/jobs", json=body, headers=headers)


def test_bad_specs_are_refused_at_submit_naming_the_field(client: httpx.Client, mlp_id: str) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"model_id": mlp_id, "passes": [{"type": "shrink"}], "input_shapes": {"x": [4, 64]}}, "passes.0"),
        (
            {"model_id": mlp_id, "passes": [{"type": "quantize", "method": "int3"}], "input_shapes": {"x": [4, 64]}},
            "passes.0.quantize.method",
        ),
        (
            {"model_id": mlp_id, "passes": [{"type": "convert", "opset": 99}], "input_shapes": {"x": [4, 64]}},
            "passes.0.convert.opset",
        ),
        ({"model_id": "mdl_missing", "passes": QUANTIZE}, "model_id"),
        ({"model_id": mlp_id, "passes": QUANTIZE}, "input_shapes.x"),
        ({"model_id": mlp_id, "passes": QUANTIZE, "input_shapes": {"x": [4, 65]}}, "input_shapes.x"),
        ({"model_id": mlp_id, "passes": QUANTIZE, "input_shapes": {"y": [4, 64]}}, "input_shapes.y"),
        ({"model_id": mlp_id, "passes": [], "input_shapes": {"x": [4, 64]}}, "passes"),
    ]
    before = len(client.get("/v1/jobs", params={"limit": 200}).json()["items"])
    for body, field in cases:
        response = submit(client, body)
        assert response.status_code == 422, (body, response.text)
        fields = [e["field"] for e in response.json()["errors"]]
        assert any(f.startswith(field) for f in fields), f"expected an error on {field}, got {fields}"
    assert len(client.get("/v1/jobs", params={"limit": 200}).json()["items"]) == before, "nothing was queued"
    response = client.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422 and "not valid JSON" in response.json()["detail"]


def test_dynamic_batch_message_names_input_and_axis(client: httpx.Client, mlp_id: str) -> None:
    problem = submit(client, {"model_id": mlp_id, "passes": QUANTIZE}).json()
    assert problem["code"] == "unresolved_input_shape"
    assert "'x'" in problem["detail"] and "axis 0" in problem["detail"]


def test_job_runs_to_success_with_report_and_artifacts(
    client: httpx.Client, stack: Stack, mlp_id: str, tmp_path: Path
) -> None:
    response = submit(
        client,
        {
            "model_id": mlp_id,
            "passes": [{"type": "optimize"}, *QUANTIZE],
            "input_shapes": {"x": [4, 64]},
            "evaluate": {"latency": {"runs": 20}},
            "cache": False,  # a real run (attempts, duration), whatever ran before in the session
        },
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}" and job["status"] == "queued"
    assert [s["label"] for s in job["plan"]["steps"]] == ["optimize", "quantize dynamic"], "planned at submit"
    assert job["plan"]["artifact_format"] == "onnx"
    done = stack.wait_for(client, job["id"])
    assert done["status"] == "succeeded", done["error"]
    assert done["progress"] == 1.0 and done["attempts"] == 1 and done["duration_s"] > 0

    report = client.get(f"/v1/jobs/{job['id']}/report").json()
    assert [s["type"] for s in report["steps"]] == ["optimize", "quantize"]
    assert report["plan"] == done["plan"] == job["plan"], "the worker ran the plan stored at submit"
    assert report["result"]["fidelity"]["cosine_mean"] > 0.99, "int8 MLP stays close to the original"
    assert report["result"]["fidelity"]["top1_agreement"] is not None, "a [batch, classes] output gets top-1"
    latency = report["result"]["latency"][0]
    assert latency["p50_ms"] <= latency["p90_ms"] <= latency["p99_ms"]
    assert report["versions"]["onnxruntime"] == ort.__version__

    artifacts = client.get(f"/v1/jobs/{job['id']}/artifacts").json()
    assert sorted(a["kind"] for a in artifacts) == ["model", "report"]
    model_art = next(a for a in artifacts if a["kind"] == "model")
    assert report["result"]["artifact_id"] == model_art["id"]
    body = client.get(model_art["download_url"])
    assert body.status_code == 200 and hashlib.sha256(body.content).hexdigest() == model_art["sha256"]
    assert body.headers["etag"] == f'"{model_art["sha256"]}"'
    assert client.get(model_art["download_url"], headers={"If-None-Match": body.headers["etag"]}).status_code == 304
    part = client.get(model_art["download_url"], headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == body.content[10:20]
    assert client.get(model_art["download_url"], headers={"Range": "bytes=99999999-"}).status_code == 416

    path = tmp_path / "result.onnx"
    path.write_bytes(body.content)
    x = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
    (out,) = ort.InferenceSession(str(path)).run(None, {"x": x})
    assert out.shape == (3, 10), "the downloaded artifact runs, with a dynamic batch"


def test_idempotency_key_returns_the_same_job(client: httpx.Client, mlp_id: str) -> None:
    body = {"model_id": mlp_id, "passes": QUANTIZE, "input_shapes": {"x": [2, 64]}}
    first = submit(client, body, **{"Idempotency-Key": "retry-1"})
    again = submit(client, body, **{"Idempotency-Key": "retry-1"})
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    other = submit(client, {**body, "seed": 7}, **{"Idempotency-Key": "retry-1"})
    assert other.status_code == 409 and other.json()["code"] == "conflict"


def test_cancel_a_running_job(client: httpx.Client, stack: Stack, tmp_path: Path, heavy_onnx: Path) -> None:
    heavy = upload(client, heavy_onnx)
    job = submit(client, {"model_id": heavy["id"], "passes": QUANTIZE, "evaluate": {"latency": {"runs": 10000}}}).json()
    stack.wait_for(client, job["id"], until=("running",), timeout=120)
    cancelled = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200
    final = stack.wait_for(client, job["id"], timeout=60)
    assert final["status"] == "cancelled" and final["error"]["code"] == "cancelled"
    assert client.get(f"/v1/jobs/{job['id']}/artifacts").json() == [], "a cancelled job leaves no artifacts"
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 409, "cancelling twice says it ended"


def test_a_failing_pass_fails_the_job_with_a_code_and_the_worker_lives(
    client: httpx.Client, stack: Stack, mlp_id: str
) -> None:
    job = submit(
        client, {"model_id": mlp_id, "passes": [{"type": "convert", "opset": 11}], "input_shapes": {"x": [2, 64]}}
    ).json()
    final = stack.wait_for(client, job["id"])
    assert final["status"] == "failed" and final["error"]["code"] in {
        "conversion_failed",
        "conversion_mismatch",
        "pass_failed",
    }, final
    assert final["error"]["message"], "the client reads why"
    ok = submit(client, {"model_id": mlp_id, "passes": QUANTIZE, "input_shapes": {"x": [2, 64]}}).json()
    assert stack.wait_for(client, ok["id"])["status"] == "succeeded", "the worker takes the next job"


def test_one_request_upload_and_submit(client: httpx.Client, stack: Stack, mlp_onnx: Path) -> None:
    spec = '{"passes": [{"type": "quantize", "method": "fp16"}], "input_shapes": {"x": [2, 64]}}'
    with mlp_onnx.open("rb") as fh:
        response = client.post("/v1/jobs", files={"file": ("mlp.onnx", fh)}, data={"spec": spec})
    assert response.status_code == 202, response.text
    final = stack.wait_for(client, response.json()["id"])
    assert final["status"] == "succeeded", final["error"]
    report = client.get(f"/v1/jobs/{final['id']}/report").json()
    assert 1.7 < report["result"]["size_ratio"] < 2.2, "fp16 halves the weights"


def test_list_and_filter_jobs(client: httpx.Client) -> None:
    succeeded = client.get("/v1/jobs", params={"status": "succeeded"}).json()["items"]
    assert succeeded and all(j["status"] == "succeeded" for j in succeeded)
    assert client.get("/v1/jobs", params={"status": "bogus"}).status_code == 422
