"""The result cache through the real API, worker, database and store: an identical job returns the earlier
result at once (same artifact ids, said to be reused), `"cache": false` runs it again, a changed spec or
dataset misses, a dataset counts by its bytes not its id, another tenant never hits, and a reused job can
never be claimed, so no attempt ever writes a second result for it."""

import io
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from app.db import transitions
from app.db.session import session_scope
from tests.conftest import Stack, upload


def dataset(client: httpx.Client, seed: int) -> str:
    buffer = io.BytesIO()
    np.savez(buffer, x=np.random.default_rng(seed).standard_normal((8, 64)).astype(np.float32))
    response = client.post("/v1/datasets", files={"file": ("eval.npz", buffer.getvalue())})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@pytest.fixture(scope="module")
def ids(stack: Stack, mlp_onnx: Path) -> dict[str, str]:
    with stack.client() as client:
        return {"model": upload(client, mlp_onnx)["id"], "data": dataset(client, 1)}


def spec(ids: dict[str, str], **extra: object) -> dict:
    return {
        "model_id": ids["model"],
        "passes": [{"type": "quantize", "method": "dynamic"}],
        "evaluate": {"dataset_id": ids["data"], "latency": {"runs": 3, "warmup": 0}},
        "seed": 1401,  # this module's own key: no other test's result is reused here
        **extra,
    }


def submit(client: httpx.Client, body: dict) -> dict:
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    return dict(response.json())


def artifact_ids(client: httpx.Client, job_id: str) -> list[str]:
    return sorted(a["id"] for a in client.get(f"/v1/jobs/{job_id}/artifacts").json())


@pytest.fixture(scope="module")
def first(stack: Stack, ids: dict[str, str]) -> dict:
    with stack.client() as client:
        job = stack.wait_for(client, submit(client, spec(ids))["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["reused_from"] is None and job["attempts"] == 1, "the first job really ran"
    return job


def test_an_identical_job_returns_the_earlier_result_at_once(client: httpx.Client, ids: dict, first: dict) -> None:
    started = time.monotonic()
    again = submit(client, spec(ids))
    assert again["status"] == "succeeded", "the answer to the submit itself is the finished job"
    assert time.monotonic() - started < 5, "a cached result returns without running"
    assert again["reused_from"] == first["id"] and again["attempts"] == 0, again
    assert artifact_ids(client, again["id"]) == artifact_ids(client, first["id"]), "the same artifacts"
    report = client.get(f"/v1/jobs/{again['id']}/report").json()
    assert report["reused_from"] == first["id"] and report["job_id"] == again["id"], "the report says it was reused"
    original = client.get(f"/v1/jobs/{first['id']}/report").json()
    assert report["result"]["artifact_id"] == original["result"]["artifact_id"]


def test_the_same_dataset_bytes_under_a_new_id_still_hit(client: httpx.Client, ids: dict, first: dict) -> None:
    same_bytes = dataset(client, 1)
    assert same_bytes != ids["data"]
    assert submit(client, spec({**ids, "data": same_bytes}))["reused_from"] == first["id"], "datasets count by sha256"


def test_a_changed_dataset_or_spec_misses(client: httpx.Client, stack: Stack, ids: dict, first: dict) -> None:
    other_data = submit(client, spec({**ids, "data": dataset(client, 2)}))
    other_spec = submit(client, spec(ids, seed=1402))
    for job in (other_data, other_spec):
        assert job["status"] == "queued" and job["reused_from"] is None, job
    for job in (other_data, other_spec):
        assert stack.wait_for(client, job["id"])["status"] == "succeeded"


def test_cache_false_runs_again_with_its_own_artifacts(
    client: httpx.Client, stack: Stack, ids: dict, first: dict
) -> None:
    job = submit(client, spec(ids, cache=False))
    assert job["status"] == "queued" and job["reused_from"] is None, job
    done = stack.wait_for(client, job["id"])
    assert done["status"] == "succeeded" and done["attempts"] == 1, done
    assert set(artifact_ids(client, job["id"])).isdisjoint(artifact_ids(client, first["id"])), "its own artifacts"


def test_another_tenant_never_reuses_a_result(stack: Stack, mlp_onnx: Path, first: dict) -> None:
    with stack.client("cache-other") as other:
        ids = {"model": upload(other, mlp_onnx)["id"], "data": dataset(other, 1)}
        job = submit(other, spec(ids))
        assert job["status"] == "queued" and job["reused_from"] is None, "same bytes, another tenant: no hit"
        assert stack.wait_for(other, job["id"])["status"] == "succeeded"


def test_a_reused_job_is_never_claimed_so_no_attempt_writes_a_second_result(
    client: httpx.Client, stack: Stack, ids: dict, first: dict
) -> None:
    again = submit(client, spec(ids))
    with session_scope(stack.database_url) as session:
        claimed = transitions.claim(session, again["id"], "stray-worker:1", 60)
    assert claimed is None, "a stray or re-delivered message for a reused job claims nothing"
    prefix = f"jobs/{again['id']}/"
    assert not stack.store().list_keys(prefix), "nothing is ever stored under a reused job"
    assert client.get(f"/v1/jobs/{again['id']}").json()["attempts"] == 0
