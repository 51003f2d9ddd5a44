"""The GPU-only methods through the real API on a CPU deployment: a job for a CPU worker that names one is
refused at submit with a problem saying why and what to send instead; the same job for a GPU worker is
accepted and planned to end as a .pt2."""

from pathlib import Path

import httpx
import pytest

from tests.conftest import Stack, upload

GPU_ONLY = [
    {"type": "quantize", "method": "fp8"},
    {"type": "quantize", "method": "int8_weight_only"},
    {"type": "quantize", "method": "int4_weight_only", "group_size": 64},
    {"type": "prune", "method": "semi_structured_2_4", "importance": "wanda"},
    {"type": "prune", "method": "semi_structured_2_4", "dtype": "fp8"},
]


@pytest.fixture(scope="module")
def mlp_id(stack: Stack, mlp_onnx: Path) -> str:
    with stack.client() as c:
        return str(upload(c, mlp_onnx)["id"])


@pytest.mark.parametrize("config", GPU_ONLY, ids=lambda c: c["method"])
def test_a_gpu_method_on_a_cpu_worker_is_refused_at_submit(client: httpx.Client, mlp_id: str, config: dict) -> None:
    body = {"model_id": mlp_id, "input_shapes": {"x": [4, 64]}, "passes": [{"type": "optimize"}, config]}
    response = client.post("/v1/jobs", json=body)
    problem = response.json()
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert problem["code"] == "needs_gpu", problem
    assert [e["field"] for e in problem["errors"]] == ["passes.1"], "the problem points at the GPU pass"
    assert '"device": "cuda"' in problem["detail"] and "--queues gpu" in problem["detail"], problem["detail"]


def test_the_same_job_for_a_gpu_worker_is_queued_on_the_gpu_queue(client: httpx.Client, mlp_id: str) -> None:
    body = {"model_id": mlp_id, "input_shapes": {"x": [4, 64]}, "passes": [GPU_ONLY[0]], "device": "cuda"}
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job = response.json()
    try:
        assert job["queue"].endswith("gpu"), job["queue"]
        assert [s["label"] for s in job["plan"]["steps"]] == ["convert (auto)", "quantize fp8", "convert (auto)"]
        assert job["plan"]["artifact_format"] == "pt2", "a model of GPU kernels is delivered as .pt2"
    finally:  # no GPU worker serves this stack: leave no job queued for the tests after this one
        assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200


def test_nothing_onnx_may_follow_a_gpu_method(client: httpx.Client, mlp_id: str) -> None:
    passes = [GPU_ONLY[0], {"type": "convert", "to": "onnx"}]
    body = {"model_id": mlp_id, "input_shapes": {"x": [4, 64]}, "passes": passes, "device": "cuda"}
    problem = client.post("/v1/jobs", json=body).json()
    assert problem["code"] == "impossible_pipeline" and "delivered as .pt2" in problem["detail"], problem
