"""Tenant B calls every route with tenant A's ids: each answer is the 404 a missing id gets, and A's
objects are untouched. Table-driven: a new resource (datasets) is one line in ROUTES."""

import re
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import Stack, upload

# (method, path with {placeholders}); each placeholder names a key of the `owned` fixture.
ROUTES = [
    ("GET", "/v1/models/{model_id}"),
    ("DELETE", "/v1/models/{model_id}"),
    ("GET", "/v1/jobs/{job_id}"),
    ("POST", "/v1/jobs/{job_id}/cancel"),
    ("GET", "/v1/jobs/{job_id}/events"),
    ("GET", "/v1/jobs/{job_id}/report"),
    ("GET", "/v1/jobs/{job_id}/report.html"),
    ("GET", "/v1/jobs/{job_id}/compare?with={job_id}"),
    ("GET", "/v1/jobs/{job_id}/compare.html?with={job_id}"),
    ("GET", "/v1/jobs/{job_id}/artifacts"),
    ("GET", "/v1/artifacts/{artifact_id}"),
    ("GET", "/v1/artifacts/{artifact_id}/content"),
    ("GET", "/v1/datasets/{dataset_id}"),
    ("DELETE", "/v1/datasets/{dataset_id}"),
    ("GET", "/v1/searches/{search_id}"),
    ("POST", "/v1/searches/{search_id}/cancel"),
    ("GET", "/v1/searches/{search_id}/report.html"),
]
# List routes whose ?cursor= takes an id: another tenant's id is a 404 there too.
CURSORS = [
    ("/v1/models", "model_id"),
    ("/v1/jobs", "job_id"),
    ("/v1/datasets", "dataset_id"),
    ("/v1/searches", "search_id"),
]
MISSING = {
    "model_id": "mdl_00000000000000000000",
    "job_id": "job_00000000000000000000",
    "artifact_id": "art_00000000000000000000",
    "dataset_id": "ds_00000000000000000000",
    "search_id": "srch_00000000000000000000",
}


@pytest.fixture(scope="module")
def owned(stack: Stack, mlp_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Tenant A's model, a finished job on it (with its report), the job's artifact, a dataset and a search."""
    data = tmp_path_factory.mktemp("cross-tenant") / "x.npz"
    np.savez(data, x=np.zeros((4, 64), dtype=np.float32))
    with stack.client("tenant-a") as a:
        model = upload(a, mlp_onnx)
        with data.open("rb") as fh:
            dataset = a.post("/v1/datasets", files={"file": ("x.npz", fh)}).json()
        job = a.post(
            "/v1/jobs",
            json={
                "model_id": model["id"],
                "passes": [{"type": "quantize", "method": "dynamic"}],
                "input_shapes": {"x": [2, 64]},
                "evaluate": {"samples": 4, "latency": {"runs": 2, "warmup": 0}},
            },
        ).json()
        done = stack.wait_for(a, job["id"])
        assert done["status"] == "succeeded", done
        artifact = a.get(f"/v1/jobs/{job['id']}/artifacts").json()[0]
        search = a.post(
            "/v1/searches",
            json={
                "model_id": model["id"],
                "space": [{"passes": [{"type": "optimize"}]}],
                "input_shapes": {"x": [2, 64]},
                "evaluate": {"samples": 4, "latency": {"runs": 2, "warmup": 0}},
            },
        ).json()
    return {
        "model_id": model["id"],
        "job_id": job["id"],
        "artifact_id": artifact["id"],
        "dataset_id": dataset["id"],
        "search_id": search["id"],
    }


def _normalise(response: httpx.Response, ids: dict[str, str]) -> tuple[int, str, dict]:
    body = response.json()
    detail = body.get("detail", "")
    for name, value in ids.items():
        detail = detail.replace(value, f"<{name}>")
    return response.status_code, response.headers.get("content-type", ""), {**body, "detail": detail}


def test_every_id_route_is_in_the_matrix(stack: Stack) -> None:
    with stack.client() as client:
        paths = client.get("/openapi.json").json()["paths"]
    covered = {path.split("?")[0] for _, path in ROUTES}
    with_ids = {p for p in paths if "{" in p}
    assert with_ids <= covered, f"add these routes to ROUTES in this file: {sorted(with_ids - covered)}"


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_other_tenants_ids_are_indistinguishable_from_missing(
    stack: Stack, owned: dict[str, str], method: str, path: str
) -> None:
    names = re.findall(r"{(\w+)}", path)
    with stack.client("tenant-b") as b:
        theirs = b.request(method, path.format(**owned))
        missing = b.request(method, path.format(**MISSING))
    assert theirs.status_code == 404, f"tenant B reached tenant A's object via {method} {path}: {theirs.text}"
    expected = _normalise(missing, {n: MISSING[n] for n in names})
    assert _normalise(theirs, {n: owned[n] for n in names}) == expected, (
        "another tenant's id must answer exactly like a missing one"
    )


def test_lists_cursors_and_job_submission_do_not_leak(stack: Stack, owned: dict[str, str]) -> None:
    with stack.client("tenant-b") as b:
        for path, name in CURSORS:
            listed = b.get(path, params={"limit": 200}).json()["items"]
            assert owned[name] not in [item["id"] for item in listed], f"{path} lists tenant A's object"
            theirs, missing = (b.get(path, params={"cursor": v}) for v in (owned[name], MISSING[name]))
            assert theirs.status_code == missing.status_code == 404
            assert _normalise(theirs, {name: owned[name]}) == _normalise(missing, {name: MISSING[name]})
        spec = {"passes": [{"type": "optimize"}], "input_shapes": {"x": [2, 64]}}
        theirs = b.post("/v1/jobs", json={**spec, "model_id": owned["model_id"]})
        missing = b.post("/v1/jobs", json={**spec, "model_id": MISSING["model_id"]})
    assert theirs.status_code == 422, "a job on another tenant's model must be refused"
    norm_theirs = _normalise(theirs, {"model_id": owned["model_id"]})
    norm_missing = _normalise(missing, {"model_id": MISSING["model_id"]})
    assert norm_theirs[:2] == norm_missing[:2] and norm_theirs[2]["detail"] == norm_missing[2]["detail"]
    with stack.client("tenant-a") as a:
        assert a.get(f"/v1/models/{owned['model_id']}").status_code == 200, "B's DELETE touched A's model"
        assert a.get(f"/v1/datasets/{owned['dataset_id']}").status_code == 200, "B's DELETE touched A's dataset"
        status = a.get(f"/v1/jobs/{owned['job_id']}").json()["status"]
        assert status == "succeeded", "B's cancel changed A's job"
